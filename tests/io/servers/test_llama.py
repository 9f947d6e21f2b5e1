"""Local server management: lifecycle on a tiny stand-in server, then the real demo pair."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from shadow_burnin.errors import ServerStartError
from shadow_burnin.io.servers import llama_build
from shadow_burnin.io.servers.llama import (
    DemoPair,
    LocalServer,
    free_port,
    llama_cpp_python_server,
    llama_server_cpp,
)

# A stand-in server: answers 200 to every GET after an optional delay; prints a marker.
STAND_IN = """
import http.server, sys, time
time.sleep(float(sys.argv[2]))
print("stand-in up", flush=True)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b'{"data": []}')
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def stand_in(tmp_path: Path, delay: float = 0.0, code: str = STAND_IN) -> LocalServer:
    return LocalServer(
        "stand-in", lambda port: [sys.executable, "-c", code, str(port), str(delay)],
        log_path=tmp_path / "stand-in.log",
    )


def refuses(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_start_stop_restart_kill_on_stand_in(tmp_path: Path) -> None:
    server = stand_in(tmp_path).start(timeout=20)
    port, pid = server.port, server.pid
    assert server.running and pid is not None and port is not None
    assert server.url == f"http://127.0.0.1:{port}"
    server.kill()
    assert not server.running and server.pid is None and pid_gone(pid)
    assert refuses(port)
    server.kill()  # idempotent
    server.restart(timeout=20)
    assert server.port == port and server.running
    with urllib.request.urlopen(f"{server.url}/v1/models", timeout=5) as resp:
        assert resp.status == 200
    server.stop()
    server.stop()  # idempotent
    assert refuses(port)
    assert "stand-in up" in (tmp_path / "stand-in.log").read_text()


def test_context_manager_stops(tmp_path: Path) -> None:
    with stand_in(tmp_path) as server:
        pid = server.pid
        assert pid is not None
    assert pid_gone(pid)


def test_exit_before_ready_raises_with_log_tail(tmp_path: Path) -> None:
    code = "import sys; print('boom: cannot load the model', flush=True); sys.exit(3)"
    server = stand_in(tmp_path, code=code)
    with pytest.raises(ServerStartError) as info:
        server.start(timeout=20)
    assert "status 3" in str(info.value)
    assert "boom: cannot load the model" in str(info.value)
    assert not server.running


def test_timeout_raises_and_reaps(tmp_path: Path) -> None:
    server = stand_in(tmp_path, delay=30)
    started = time.monotonic()
    with pytest.raises(ServerStartError, match="not ready"):
        server.start(timeout=1.5)
    assert time.monotonic() - started < 15
    assert not server.running


ORPHAN = """
import sys, time
from pathlib import Path
from shadow_burnin.io.servers.llama import LocalServer
code = sys.argv[1]
s = LocalServer("child", lambda p: [sys.executable, "-c", code, str(p), "0"],
                log_path=Path(sys.argv[2]))
s.start(timeout=20)
print(s.pid, flush=True)
time.sleep(60)
"""


def test_server_dies_with_its_parent(tmp_path: Path) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", ORPHAN, STAND_IN, str(tmp_path / "child.log")],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert not pid_gone(child)
    finally:
        parent.kill()  # SIGKILL: no atexit, no finally in the parent
        parent.wait()
    deadline = time.monotonic() + 10
    while not pid_gone(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pid_gone(child)


FAKE_CMAKE = """cmake_minimum_required(VERSION 3.13)
project(fake C)
set(CMAKE_RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)
add_executable(llama-server main.c)
"""
FAKE_MAIN = '#include <stdio.h>\nint main(void) { puts("version: fake"); return 0; }\n'


def fake_sdist(tmp_path: Path, cmake: str) -> Path:
    root = tmp_path / "sdist-src" / "llama_cpp_python-0.3.36" / "vendor" / "llama.cpp"
    root.mkdir(parents=True)
    (root / "CMakeLists.txt").write_text(cmake)
    (root / "main.c").write_text(FAKE_MAIN)
    tarball = tmp_path / "llama_cpp_python-0.3.36.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(root.parents[1], arcname="llama_cpp_python-0.3.36")
    return tarball


def test_llama_server_build_pipeline_on_a_fake_sdist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv(llama_build.SDIST_ENV, str(fake_sdist(tmp_path, FAKE_CMAKE)))
    said: list[str] = []
    binary = llama_build.ensure_llama_server(said.append)
    assert binary == tmp_path / "cache" / "shadow-burnin" / "llama-server-0.3.36" / "bin" / (
        "llama-server")
    assert subprocess.run([binary], capture_output=True, text=True).stdout == "version: fake\n"
    assert any("built in" in m for m in said)
    assert not list((tmp_path / "cache" / "shadow-burnin").glob(".llama-build-*"))
    assert "version: fake" in llama_build.llama_server_log().read_text()
    said.clear()
    assert llama_build.ensure_llama_server(said.append) == binary  # cached: no work
    assert said == []


def test_llama_server_build_failure_raises_with_log_tail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    broken = FAKE_CMAKE.replace("add_executable(llama-server main.c)", "add_executable(")
    monkeypatch.setenv(llama_build.SDIST_ENV, str(fake_sdist(tmp_path, broken)))
    with pytest.raises(ServerStartError, match="cmake configure failed") as info:
        llama_build.ensure_llama_server()
    assert "CMakeLists.txt" in str(info.value)
    assert not llama_build.llama_server_dir().exists()


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


# --------------------------------------------------------------------------- real servers


def complete(url: str, prompt: str, max_tokens: int = 8) -> dict:
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
    request = urllib.request.Request(
        f"{url}/v1/completions", data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoPair]:
    """A private demo pair (these tests kill and restart its servers)."""
    try:
        started = DemoPair(tmp_path_factory.mktemp("servers-pair")).start()
    except ServerStartError as exc:
        pytest.fail(f"demo pair did not start (is the [demo] extra installed?): {exc}",
                    pytrace=False)
    try:
        yield started
    finally:
        started.stop()


@pytest.mark.e2e
def test_pair_starts_and_both_complete(pair: DemoPair) -> None:
    assert pair.v1.kind == "llama-server" and pair.v2.kind == "llama-cpp-python"
    assert pair.v1.port != pair.v2.port
    for server in (pair.v1, pair.v2):
        reply = complete(server.url, "The capital of France is")
        assert reply["choices"][0]["text"].strip(), (server.name, reply)


@pytest.mark.e2e
def test_kill_refuses_and_restart_same_port(pair: DemoPair) -> None:
    v2 = pair.v2
    port, pid = v2.port, v2.pid
    assert port is not None and pid is not None
    try:
        v2.kill()
        assert refuses(port) and pid_gone(pid)
        v2.restart()
        assert v2.port == port and v2.pid != pid
        assert complete(v2.url, "The capital of France is")["choices"][0]["text"].strip()
    finally:
        pair.revive()


@pytest.mark.e2e
@pytest.mark.parametrize("kind", ["llama-server", "llama-cpp-python"])
def test_bogus_model_raises_with_log_tail(kind: str, tmp_path: Path) -> None:
    bogus = tmp_path / "no-such-model.gguf"
    log = tmp_path / f"{kind}.log"
    if kind == "llama-server":
        server = llama_server_cpp(bogus, log_path=log)
    else:
        server = llama_cpp_python_server(bogus, log_path=log)
    with pytest.raises(ServerStartError) as info:
        server.start(timeout=60)
    message = str(info.value)
    assert "before it was ready" in message
    tail = log.read_text().splitlines()[-1]
    assert tail in message
    assert not server.running
