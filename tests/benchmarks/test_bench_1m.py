"""The 1 M-round benchmark's generator writes what the runner would: buckets classified by
``core.compare`` and one line per round (defect 10)."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path
from types import ModuleType

import orjson

from shadow_burnin.io.log.logread import iter_records

ROOT = Path(__file__).resolve().parents[2]


def bench_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_1m", ROOT / "benchmarks/bench_1m.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class EndCut(random.Random):
    """Always picks the "DIFF" branch and cuts at the very end of the text."""

    def random(self) -> float:
        return 0.0

    def randint(self, a: int, b: int) -> int:
        return b


def test_diff_at_the_end_is_prefix_only(tmp_path: Path) -> None:
    bench = bench_module()
    text, other, _roll = bench.texts(EndCut(1))
    assert other == text + "DIFF"  # the case the old generator called no-match
    log = tmp_path / "g.jsonl"
    bench.generate(log, 3, rng=EndCut(1))
    rounds = [orjson.loads(x) for x in log.read_bytes().splitlines()]
    assert [r["bucket"] for r in rounds] == ["prefix-only"] * 3


def test_generated_log_is_classified_and_one_line_per_round(tmp_path: Path) -> None:
    bench = bench_module()
    log = tmp_path / "g.jsonl"
    bench.generate(log, 3000, seed=5)
    lines = log.read_bytes().splitlines()
    assert len(lines) == 3000
    from shadow_burnin.core.compare import classify

    buckets = set()
    for line in lines:
        r = orjson.loads(line)
        t1 = r["v1"]["text"] if r["v1"]["error"] is None else None
        t2 = r["v2"]["text"] if r["v2"]["error"] is None else None
        cmp = classify(t1, t2)
        assert (r["bucket"], r["divergence_byte"], r["prefix_match_chars"]) == \
            (cmp.bucket, cmp.divergence_byte, cmp.prefix_match_chars)
        buckets.add(r["bucket"])
    assert {"exact", "no-match", "prefix-only"} <= buckets
    pairs = [r for _n, _t, r in iter_records(log) if r.get("kind") == "aa"]
    assert len(pairs) == 300
