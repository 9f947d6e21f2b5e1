"""llama.cpp's C++ server via xllamacpp, each in its own process (real model)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from shadow_burnin.errors import ServerStartError
from shadow_burnin.io.servers.xllama import XllamaSettings, xllama_server
from tests.io.servers.test_local import pid_gone, refuses


def post(url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(f"{url}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def test_settings_validate_and_label() -> None:
    with pytest.raises(ValueError, match="cache_type_k"):
        XllamaSettings(cache_type_k="f8")
    with pytest.raises(ValueError, match="flash_attn"):
        XllamaSettings(flash_attn="yes")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        XllamaSettings(threads=0)
    label = XllamaSettings(threads=2, batch=8, ubatch=8, rope_freq_base=20000).label()
    assert label == "2t, batch 8/8, rope base 20000"


@pytest.mark.e2e
def test_serves_deterministically_and_stops_on_sigterm(demo_model: Path, tmp_path: Path) -> None:
    server = xllama_server(demo_model, log_path=tmp_path / "x.log").start(timeout=120)
    try:
        assert server.started_in is not None
        ids = post(server.url, "/tokenize", {"content": "The capital of France is",
                                             "add_special": True})["tokens"]
        assert ids[0] == 2 and len(ids) == 6  # BOS + 5 pieces
        body = {"prompt": "The capital of France is", "max_tokens": 8, "temperature": 0}
        first = post(server.url, "/v1/completions", body)
        again = post(server.url, "/v1/completions", body)
        assert first["choices"][0]["text"].strip()
        assert first["choices"][0]["text"] == again["choices"][0]["text"]
        assert first["usage"]["completion_tokens"] == 8
        props = json.loads(urllib.request.urlopen(f"{server.url}/props", timeout=10).read())
        assert props["default_generation_settings"]["n_ctx"] == XllamaSettings().n_ctx
    finally:
        port, pid = server.port, server.pid
        server.stop()
    assert pid is not None and pid_gone(pid) and port is not None and refuses(port)
    assert "stopping on signal 15" in (tmp_path / "x.log").read_text()


@pytest.mark.e2e
def test_bogus_model_fails_with_its_log_tail(tmp_path: Path) -> None:
    bogus = tmp_path / "broken.gguf"
    bogus.write_bytes(b"GGUF" + b"\0" * 64)  # a header and nothing behind it
    server = xllama_server(bogus, log_path=tmp_path / "bad.log")
    with pytest.raises(ServerStartError) as info:
        server.start(timeout=60)
    message = str(info.value)
    assert "before it was ready" in message and "xllamacpp.Server failed" in message
    assert not server.running


ORPHAN = """
import sys, time
from pathlib import Path
from shadow_burnin.io.servers.xllama import xllama_server
s = xllama_server(Path(sys.argv[1]), log_path=Path(sys.argv[2])).start(timeout=120)
print(s.pid, flush=True)
time.sleep(600)
"""


@pytest.mark.e2e
def test_server_dies_with_its_parent(demo_model: Path, tmp_path: Path) -> None:
    parent = subprocess.Popen([sys.executable, "-c", ORPHAN, str(demo_model),
                               str(tmp_path / "child.log")], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert not pid_gone(child)
    finally:
        parent.send_signal(signal.SIGKILL)  # no atexit, no finally in the parent
        parent.wait()
    for _ in range(100):
        if pid_gone(child):
            break
        time.sleep(0.1)
    assert pid_gone(child), f"orphan server {child} survived its parent"
