"""Hostile prompt ids and categories through a real burn-in: a real llama.cpp server
(xllamacpp, in its own process, on the real Gemma 3 270M model) answers both sides; the
prompts file carries rich markup, an OSC-8 link and raw escape codes in its ids and
categories. Every command that prints them shows them literally, and CUTOVER.md escapes
them. Small: 2 rounds, max_tokens 8.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tests.cli.conftest import invoke

pytestmark = pytest.mark.e2e

SERVER = """
import sys, xllamacpp, signal, threading
p = xllamacpp.CommonParams()
p.model.path = sys.argv[1]
p.hostnames = ["127.0.0.1"]
p.port = int(sys.argv[2])
p.n_ctx = 512
p.n_parallel = 1
p.cpuparams.n_threads = 1
p.cpuparams_batch.n_threads = 1
server = xllamacpp.Server(p)
print("ready", flush=True)
threading.Event().wait()
"""

RICH = "[bold red]PID[/]"
LINK = "[link=file:///etc/passwd]cat[/link]"
RAW = "\x1b]0;PWNED\x07\x1b[2J"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    from shadow_burnin.io.servers.llama_build import ensure_model

    model = ensure_model()
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(model), str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # returns once the model is loaded (or the child died)
        if b"ready" not in line:
            pytest.fail(f"xllamacpp server did not start (exit {proc.poll()})")
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):  # bounded number of tries, no wall-clock assertion
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def test_hostile_ids_through_a_real_burnin(server: str, tmp_path: Path) -> None:
    prompts = tmp_path / "p.jsonl"
    prompts.write_bytes(
        orjson.dumps({"id": RICH, "category": LINK, "prompt": "The capital of France is"})
        + b"\n" + orjson.dumps({"id": "p2", "category": "[/]",
                                "prompt": "One, two, three,"}) + b"\n")
    raw = tmp_path / "raw.jsonl"  # raw escape codes in an id: refused when prompts load
    raw.write_bytes(orjson.dumps({"id": f"p{RAW}", "category": "c", "prompt": "x"}) + b"\n")
    refused = invoke("prompts", "--prompts", raw)
    assert refused.exit_code == 2 and "\x1b" not in refused.stderr
    log = tmp_path / "b.jsonl"
    res = invoke("run", "--v1", server, "--v2", server, "--api", "completions",
                 "--max-tokens", 8, "--rounds", 2, "--interval", 0, "--prompts", prompts,
                 "--log", log, "--quiet", "--aa-every", 0, "--refire", 0)
    assert res.exit_code == 0, res.output
    rounds = [orjson.loads(x) for x in log.read_bytes().splitlines()]
    assert len(rounds) == 2 and {r["bucket"] for r in rounds} == {"exact"}
    assert all(r["v1"]["text"] for r in rounds)  # the real model answered
    for argv in (["bench"], ["recent"], ["show", "1"], ["show", "2"], ["gates"]):
        out = invoke(*argv, "--log", log).stdout
        assert "\x1b" not in out and "]8;" not in out, argv
    shown = invoke("recent", "--log", log).stdout
    assert RICH in shown
    cutover = tmp_path / "CUTOVER.md"
    invoke("gates", "--log", log, "--write", cutover)
    md = cutover.read_text()
    assert "\x1b" not in md
    # the log and its state are refused as output targets, and stay whole
    before = log.read_bytes()
    for target in (log, tmp_path / "b.state", tmp_path / "b.jsonl.lock"):
        assert invoke("gates", "--log", log, "--write", target).exit_code == 2
    assert log.read_bytes() == before
