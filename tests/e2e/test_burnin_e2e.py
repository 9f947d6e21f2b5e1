"""End to end on the real pair: v1 = llama.cpp's C++ server (xllamacpp), v2 = mistral.rs
(Rust) behind the OpenAI-compatible front.

Same Gemma 3 270M weights, two engines: the divergences here are real (near-ties mostly).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from shadow_burnin.app.demo import write_demo_prompts
from shadow_burnin.core.compare import classify
from shadow_burnin.io.log.store import rebuild_state
from tests.cli.conftest import invoke, read_log

pytestmark = pytest.mark.e2e
MAX_TOKENS = "24"


def run_args(pair, log: Path, prompts: Path, *extra: str) -> list[str]:
    config = log.with_suffix(".toml")  # the demo's sampling: same penalty, no prompt cache
    config.write_text("[request.extra]\ncache_prompt = false\nrepeat_penalty = 1.0\n")
    return ["run", "--config", str(config), "--v1", pair.v1.url, "--v2", pair.v2.url,
            "--api", "completions",
            "--max-tokens", MAX_TOKENS, "--interval", "0", "--timeout", "120",
            "--prompts", str(prompts), "--log", str(log), "--seed", "5",
            # forensics off by default here (fewer requests per round); the first test
            # turns them on, tests/e2e/test_forensics_e2e.py covers them in depth
            "--logprobs", "0", "--refire", "0", "--aa-every", "0", *extra]


def start_run(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "shadow_burnin", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)


def wait_rounds(log: Path, n: int, timeout: float = 240.0, pred=None) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists():
            records = [orjson.loads(x) for x in log.read_bytes().splitlines()
                       if x.endswith(b"}")]
            if len(records) >= n and (pred is None or pred(records)):
                return records
        time.sleep(0.2)
    raise AssertionError(f"{log}: fewer than {n} rounds (or condition unmet) in {timeout} s")


def test_burnin_on_real_servers(real_pair, tmp_path: Path) -> None:
    log = tmp_path / "real.jsonl"
    prompts = write_demo_prompts(tmp_path / "prompts.jsonl")
    res = invoke(*run_args(real_pair, log, prompts, "--rounds", "12", "--logprobs", "5",
                           "--refire", "1"))
    assert res.exit_code == 0, res.output
    records = read_log(log)
    assert [r["round"] for r in records] == list(range(1, 13))
    for r in records:
        t1, t2 = r["v1"]["text"], r["v2"]["text"]
        assert r["v1"]["error"] is None and r["v2"]["error"] is None, r
        assert t1.strip() and t2.strip(), r  # real text from both servers
        expected = classify(t1, t2)
        assert (r["bucket"], r["divergence_byte"], r["prefix_match_chars"]) == (
            expected.bucket, expected.divergence_byte, expected.prefix_match_chars)
        assert r["v1"]["ttft_ms"] is not None and r["v1"]["ttft_ms"] <= r["v1"]["latency_ms"]
    assert any(r["bucket"] == "exact" for r in records)
    for r in records:  # both engines give logprobs: every divergence gets a verdict, and
        if r["bucket"] == "no-match":  # both are deterministic: re-fires reproduce it
            fx = r["forensics"]
            assert fx["verdict"] in ("near-tie", "regression", "unexplained"), fx
            assert fx["tokens"]["v1"] and fx["tokens"]["v2"], fx
            assert r["refire"]["outcome"] == "reproducible", r["refire"]
    summary = orjson.loads(invoke("bench", "--json", "--log", log).stdout)
    recount = {b: sum(r["bucket"] == b for r in records) for b in summary["counts"]}
    assert summary["counts"] == recount and summary["rounds"] == 12
    parity = sum(recount[b] for b in ("exact", "prefix-only", "no-match"))
    assert summary["exact_match_rate"] == pytest.approx(recount["exact"] / parity)


def test_sigkill_runner_then_restart(real_pair, tmp_path: Path) -> None:
    log = tmp_path / "kill.jsonl"
    prompts = write_demo_prompts(tmp_path / "prompts.jsonl")
    proc = start_run(run_args(real_pair, log, prompts))
    try:
        wait_rounds(log, 3)
        time.sleep(0.4)  # most likely mid-round
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = len(read_log(log))
    res = invoke(*run_args(real_pair, log, prompts, "--rounds", "3"))
    assert res.exit_code == 0, res.output
    records = read_log(log)
    assert [r["round"] for r in records] == list(range(1, before + 4))
    assert [r["cursor"] for r in records] == list(range(before + 3))
    state = orjson.loads((tmp_path / "kill.state").read_bytes())
    rebuilt = rebuild_state(log)
    assert state["last_round"] == rebuilt.last_round == before + 3
    assert state["counts"] == rebuilt.counts


def test_v2_dies_and_comes_back(real_pair, tmp_path: Path) -> None:
    log = tmp_path / "v2down.jsonl"
    prompts = write_demo_prompts(tmp_path / "prompts.jsonl")
    proc = start_run(run_args(real_pair, log, prompts))
    try:
        wait_rounds(log, 2)
        real_pair.v2.kill()
        down = lambda rs: sum(r["bucket"] == "v2-unreachable" for r in rs) >= 2  # noqa: E731
        wait_rounds(log, 3, pred=down)
        real_pair.revive()
        n = len(read_log(log))
        back = lambda rs: any(r["v2"]["error"] is None for r in rs[n:])  # noqa: E731
        wait_rounds(log, n + 1, pred=back)
    finally:
        real_pair.revive()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err.decode()[-2000:]
    records = read_log(log)
    buckets = [r["bucket"] for r in records]
    first_down = buckets.index("v2-unreachable")
    assert all(r["v1"]["error"] is None for r in records)  # v1 kept answering
    assert all(r["v2"]["error"].startswith(("connection-refused", "connection-reset"))
               for r in records if r["bucket"] == "v2-unreachable")
    recovered = [r for r in records[first_down:] if r["bucket"] != "v2-unreachable"]
    assert recovered and recovered[-1]["v2"]["text"].strip()
    assert [r["round"] for r in records] == list(range(1, len(records) + 1))
