"""LocalServer / ServerPair lifecycle on tiny stand-in servers (no model, no engine)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from shadow_burnin.errors import ServerStartError
from shadow_burnin.io.servers.local import LocalServer, ServerPair, free_port

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
from shadow_burnin.io.servers.local import LocalServer
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


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))




def test_pair_starts_both_and_reports_progress(tmp_path: Path) -> None:
    said: list[str] = []
    a = LocalServer("a", lambda p: [sys.executable, "-c", STAND_IN, str(p), "0"],
                    log_path=tmp_path / "a.log")
    b = LocalServer("b", lambda p: [sys.executable, "-c", STAND_IN, str(p), "1.5"],
                    log_path=tmp_path / "b.log")
    pair = ServerPair(a, b, said.append)
    with pair.start(timeout=30, every=0.5):
        assert a.running and b.running
        assert a.started_in is not None and b.started_in is not None
        assert b.started_in >= 1.5  # its own delay, measured from its spawn
        pids = [a.pid, b.pid]
    assert all(pid is not None and pid_gone(pid) for pid in pids)
    assert any(m.startswith("a ready in") for m in said)
    assert any(m.startswith("b ready in") for m in said)
    assert any(m.startswith("still loading: b") for m in said)  # never silent


def test_pair_one_side_fails_both_stopped_with_its_log_tail(tmp_path: Path) -> None:
    good = stand_in(tmp_path)
    bad = LocalServer("bad", lambda p: [sys.executable, "-c",
                                        "import sys; print('cannot load: tensor missing', "
                                        "flush=True); sys.exit(1)"],
                      log_path=tmp_path / "bad.log")
    pair = ServerPair(good, bad)
    with pytest.raises(ServerStartError) as info:
        pair.start(timeout=30)
    assert "cannot load: tensor missing" in str(info.value)
    assert not good.running and not bad.running


def test_pair_revive_restarts_the_dead_side_on_its_port(tmp_path: Path) -> None:
    a, b = stand_in(tmp_path), LocalServer(
        "b", lambda p: [sys.executable, "-c", STAND_IN, str(p), "0"], log_path=tmp_path / "b.log")
    with ServerPair(a, b).start(timeout=30) as pair:
        port, pid = b.port, b.pid
        b.kill()
        assert not b.running and a.running
        pair.revive(timeout=30)
        assert b.running and b.port == port and b.pid != pid
