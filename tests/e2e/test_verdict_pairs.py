"""The labelled benchmark's reduced CI form on real servers: one benign and two broken
xllamacpp pairs (``benchmarks/verdicts/run.py --reduced``), each run through the real
``run`` with forensics on; every run-level decision must match the pair's label.

flash attention on is the benign change the default noise prior was widened for (another
attention kernel: it flips near-ties and moves margins ~0.15 nats) — it must be called
noise, and said to be on another numeric path; a KV cache in q4_0 (subtle) and a server
default ``repeat_penalty`` 1.1 (a sampler setting) must be called changed.

The benchmark runs as a user runs it (its own process, its own server processes); the
test reads its ``results.json`` and checks the logs it kept. Decisions are asserted,
never times (the README notes how long it took)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.e2e.conftest import require_demo_extra

ROOT = Path(__file__).resolve().parents[2]
ROUNDS = 20
MAX_TOKENS = 12

pytestmark = pytest.mark.e2e


def test_reduced_benchmark_decisions_match_labels(tmp_path: Path) -> None:
    require_demo_extra()
    out = tmp_path / "verdicts"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/verdicts/run.py"), "--reduced",
         "--rounds", str(ROUNDS), "--max-tokens", str(MAX_TOKENS), "--out", str(out),
         "--markdown"],
        capture_output=True, text=True, env=env, check=False)
    assert (out / "results.json").is_file(), proc.stdout + proc.stderr
    results = orjson.loads((out / "results.json").read_bytes())
    rows = {r["name"]: r for r in results["pairs"]}
    assert set(rows) == {"flash-attn", "kv-q4_0", "repeat-penalty"}
    for name, row in rows.items():
        assert row["status"] == "ok", (name, row.get("note"), proc.stderr[-2000:])
        # every round of the pair is in its log, with forensics on its divergences
        log = Path(row["log"])
        records = [orjson.loads(line) for line in log.read_bytes().splitlines()]
        assert len(records) == ROUNDS == row["rounds"]
        diverged = [r for r in records if r["bucket"] == "no-match"]
        assert len(diverged) == row["flips"]
        assert all("forensics" in r for r in diverged), name
        want = "noise" if row["label"] == "benign" else "changed"
        assert row["decision"] == want, (name, row["run_verdict"].get("explanation"))
        assert row["right"] is True
    # every pair did diverge (a decision on zero flips would prove nothing)
    assert all(row["flips"] > 0 for row in rows.values()), {n: r["flips"] for n, r in rows.items()}
    # the benign kernel change is noise *on another numeric path*, said in the explanation
    fa = rows["flash-attn"]["run_verdict"]
    # (measured: mean margin move 0.161 nats, beyond one kernel's 0.1, within the prior)
    assert fa["numeric_path"] == "other", fa
    assert "another kernel or engine" in fa["explanation"]
    # the subtle break is caught by its margin moves, beyond the prior
    assert rows["kv-q4_0"]["run_verdict"]["numeric_path"] == "beyond"
    # the README table came out, one line per pair, each decision marked right
    table = (out / "results.md").read_text()
    for name in rows:
        line = next(x for x in table.splitlines() if x.startswith(f"| {name} |"))
        assert "✓" in line and "✗" not in line
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
