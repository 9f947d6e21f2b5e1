"""The compiled pair (opt-in, extra [llama-cpp]): llama-server build pipeline, real pair.

Everything here compiles (cmake, a C compiler) or needs llama-cpp-python, so the module
carries the ``llama_cpp`` marker (deselected by default) and ``e2e``; run it with
``pip install -e '.[llama-cpp]' && python -m pytest -m llama_cpp``.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from shadow_burnin.errors import ServerStartError
from shadow_burnin.io.servers import llama_build
from shadow_burnin.io.servers.llama import (
    DemoPair,
    llama_cpp_python_server,
    llama_server_cpp,
)
from tests.io.servers.test_local import pid_gone, refuses

pytestmark = [pytest.mark.llama_cpp, pytest.mark.e2e]

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


def test_upgrade_pair_llama_server_vs_xllamacpp(tmp_path: Path) -> None:
    """``demo --pair llama-cpp-upgrade``: the older llama-server against xllamacpp."""
    from shadow_burnin.app.demo import make_pair

    with make_pair("llama-cpp-upgrade", tmp_path).start(timeout=300) as upgrade:
        assert (upgrade.v1.kind, upgrade.v2.kind) == ("llama-server", "xllamacpp")
        for server in upgrade.servers:
            assert complete(server.url, "The capital of France is")["choices"][0]["text"]
