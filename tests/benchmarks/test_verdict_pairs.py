"""The labelled benchmark's catalogue and results table, on synthetic rows (the real
servers are in tests/e2e/test_verdict_pairs.py)."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"verdicts_{name}", ROOT / "benchmarks/verdicts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def run() -> ModuleType:
    module = load("run")
    sys.path.remove(str(ROOT / "benchmarks/verdicts"))
    return module


@pytest.fixture(scope="module")
def pairs() -> ModuleType:
    return load("pairs")


def test_catalogue_labels_and_variants(pairs: ModuleType) -> None:
    cat = pairs.CATALOGUE
    assert len({p.name for p in cat}) == len(cat)
    assert {p.label for p in cat} == {"benign", "broken"}
    # every broken pair has a severity, every v2 differs from its v1
    assert all(p.severity for p in cat if p.label == "broken")
    assert all(p.v1 != p.v2 for p in cat)
    # the table prints catalogue strings as they are: none may break a markdown row
    assert not any("|" in s for p in cat for s in (p.name, p.why, p.v1.describe(),
                                                   p.v2.describe()))
    # one v1 spec serves every pair but the llama.cpp upgrade (one v1 process, reused)
    assert len({p.v1 for p in cat}) == 2
    assert {p.name for p in cat if p.v1 != pairs.V1} == {"llama-upgrade"}
    reduced = pairs.select(None, reduced=True)
    assert [p.label for p in reduced].count("benign") == 1
    assert all(p.v2.engine == "xllamacpp" for p in reduced)
    assert [p.name for p in pairs.select("rope-x2, threads-2")] == ["rope-x2", "threads-2"]
    with pytest.raises(SystemExit, match="unknown pair 'nope'"):
        pairs.select("threads-2,nope")


def test_compiled_pair_is_skipped_without_the_extra(pairs: ModuleType, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from shadow_burnin.io.servers.llama_build import llama_server_dir

    upgrade = pairs.BY_NAME["llama-upgrade"]
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # no llama-server built here
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert "llama-cpp" in upgrade.v1.unavailable()
    assert upgrade.v2.unavailable() is None
    assert pairs.BY_NAME["cpp-vs-rust"].v2.unavailable() is None
    # a llama-server already built in the cache is enough (no extra needed)
    llama_server_dir().mkdir(parents=True)
    (llama_server_dir() / "OK").write_text("")
    assert upgrade.v1.unavailable() is None


def test_matched_tokens_aggregates_tokstats(run: ModuleType) -> None:
    recs: list[dict[str, Any]] = [
        {"bucket": "exact", "tokstats": {"n": 10, "dlp_sum": 0.5, "dlp_max": 0.2,
                                         "move_n": 5, "move_sum": 0.25, "move_max": 0.1,
                                         "topk_overlap": 9.0, "off_top1": 0}},
        {"bucket": "no-match", "tokstats": {"n": 30, "dlp_sum": 1.5, "dlp_max": 0.4,
                                            "move_n": 0, "move_sum": 0.0,
                                            "move_max": math.nan, "topk_overlap": 27.0,
                                            "off_top1": 2}},
        {"bucket": "v2-unreachable"},
    ]
    m = run.matched_tokens(recs)
    assert m["rounds"] == 2 and m["tokens"] == 40
    assert m["dlp_mean"] == pytest.approx(0.05) and m["dlp_max"] == 0.4
    assert m["move_mean"] == pytest.approx(0.05) and m["move_max"] == 0.1
    assert m["topk_overlap"] == pytest.approx(0.9) and m["off_top1"] == 2
    assert run.matched_tokens([{"bucket": "exact"}]) is None


def _row(name: str, label: str, decision: str, verdicts: dict[str, int],
         **kw: Any) -> dict[str, Any]:
    flips = sum(verdicts.values())
    return {"name": name, "label": label, "severity": kw.get("severity", ""),
            "v2": kw.get("v2", "xllamacpp 2t"), "status": "ok", "exact": 10 - flips,
            "parity": 10, "buckets": {"exact": 10 - flips, "no-match": flips,
                                      **kw.get("buckets", {})},
            "flips": flips, "verdicts": verdicts, "regression": verdicts.get("regression", 0),
            "decision": decision,
            "right": decision == ("noise" if label == "benign" else "changed"),
            "run_verdict": {"decision": decision, "explanation": kw.get("why", "because"),
                            "swing_max": 0.5, "drift_max": None,
                            "tests": [{"name": "outside", "observed": 1, "n": flips,
                                       "p_value": 1e-9 if decision == "changed" else 0.5}]},
            "matched": None}


def test_table_marks_decisions_escapes_and_sums_up(run: ModuleType) -> None:
    rows = [
        _row("threads-2", "benign", "noise", {"near-tie": 19, "regression": 1}),
        _row("rope-x2", "broken", "changed", {"regression": 3, "x | <b>y</b>": 1},
             severity="blatant"),
        _row("rope-x1.01", "broken", "noise", {}, severity="subtle"),
        {**_row("rope-x1.1", "broken", "noise", {"near-tie": 2}, severity="subtle"),
         "undetectable": "looks like a kernel change", "right": True},
        {"name": "llama-upgrade", "label": "benign", "severity": "", "v2": "xllamacpp",
         "status": "skipped", "note": "needs the compiled `llama-cpp` extra"},
    ]
    meta = {"rounds": 10, "max_tokens": 8, "date": "2026-11-29", "load": "1.0→2.0",
            "seconds": 600.0, "v1": "xllamacpp 1t", "test_names": "a · b",
            "command": "python benchmarks/verdicts/run.py --markdown --rounds 10"}
    rows[0]["matched"] = {"rounds": 10, "tokens": 120, "dlp_mean": 0.0123, "dlp_max": 0.3,
                          "move_mean": 0.05, "move_max": 0.6, "topk_overlap": 0.97,
                          "off_top1": 0}
    rows[0]["run_verdict"]["tokens"] = {"predicted_flips": 17.25}
    table = run.markdown_table(rows, meta)
    assert "| threads-2 | benign | 120 | 0.012 / 0.30 | 0.050 / 0.60 | 0.970 | 0 | 20 / 17.2 |" \
        in table
    lines: dict[str, str] = {}
    for x in table.splitlines():  # the results table's row (the first row of that name)
        if x.startswith("| "):
            lines.setdefault(x.split(" | ")[0], x)
    assert "**noise** ✓" in lines["| threads-2"]
    assert "**changed** ✓" in lines["| rope-x2"] and "(p 1e-09)" in lines["| rope-x2"]
    assert "**noise** ✗" in lines["| rope-x1.01"]
    assert "not run: needs the compiled" in lines["| llama-upgrade"]
    # a hostile verdict name from a log cannot add a column or markup
    assert lines["| rope-x2"].count(" | ") == lines["| threads-2"].count(" | ")
    assert "<b>" not in table
    assert "**noise** (undetectable)" in lines["| rope-x1.1"]
    assert "Run-level decision right: 2 of 3 scored pairs" in table
    assert "undetectable at this size (looks like a kernel change), not scored: " \
        "rope-x1.1 noise." in table
    assert "Benign flips not called `regression`: 19 of 20 = 95 %" in table
    assert "`regression` rate on rope-x2 (blatant): 3 of 4 flips = 75 %" in table
    assert "No divergence at all in this run" in table and "rope-x1.01" in table
    assert "--rounds 10" in table


def test_round_verdict_applies_the_current_thresholds(run: ModuleType) -> None:
    base = {"divergence_token": 3, "a": " x", "b": " y", "margin_v1": 0.1, "margin_v2": 0.1,
            "b_in_v1_top": True, "a_in_v2_top": True, "k": 5}
    # recorded under older, tighter rules: the figures now make it a near-tie
    assert run.round_verdict({**base, "verdict": "regression", "swing": 0.2,
                              "prefix_drift": 0.12}) == "near-tie"
    assert run.round_verdict({**base, "verdict": "near-tie", "swing": 0.2,
                              "prefix_drift": 0.1, "b_in_v1_top": False,
                              "swing_min": 2.0}) in ("near-tie", "regression")
    assert run.round_verdict({**base, "verdict": "near-tie", "swing": 5.0,
                              "prefix_drift": 0.0}) == "regression"
    # a side's pick below its own top-1: a regression (older logs said unexplained)
    assert run.round_verdict({**base, "verdict": "unexplained", "swing": 0.0,
                              "reason": "v2 chose ' a' but ranks ' b' higher: its logprobs "
                                        "do not describe its greedy choice"}) == "regression"
    # no figures (no logprobs): kept as recorded
    assert run.round_verdict({"verdict": "unexplained",
                              "reason": "no logprobs from v2"}) == "unexplained"


def test_long_and_recall_prompt_sets(run: ModuleType, tmp_path: Path) -> None:
    import orjson

    longs = [orjson.loads(x) for x in
             run.write_long_prompts(tmp_path / "long.jsonl").read_bytes().splitlines()]
    cuts = {d["category"] for d in longs}
    assert cuts == {f"long-w{w}" for w in run.LONG_WORDS}
    for d in longs:  # each prompt is its source cut after exactly that many words
        assert len(d["prompt"].split(" ")) == int(d["category"].removeprefix("long-w"))
    # the same sources at every cut: the short/long contrast compares like with like
    by_cut = {c: {d["id"].rsplit("-w", 1)[0] for d in longs if d["category"] == c}
              for c in cuts}
    assert len({frozenset(v) for v in by_cut.values()}) == 1
    recalls = [orjson.loads(x) for x in
               run.write_recall_prompts(tmp_path / "recall.jsonl").read_bytes().splitlines()]
    assert {d["category"] for d in recalls} == {f"recall-r{w}" for w in run.RECALL_WORDS}
    for d in recalls:  # a passage, a blank line, the passage's start again
        passage, cue = d["prompt"].split("\n\n")
        assert passage.startswith(cue) and len(cue.split()) == run.RECALL_CUE
        assert len(passage.split()) == int(d["category"].removeprefix("recall-r"))


def test_position_figures_per_cut(tmp_path: Path) -> None:
    import orjson

    position = load("position")
    log = tmp_path / "p.jsonl"
    rows = [("long-w32", "exact", {"n": 10, "dlp_sum": 0.1, "move_n": 10, "move_sum": 1.0}),
            ("long-w32", "no-match", {"n": 10, "dlp_sum": 0.3, "move_n": 10,
                                      "move_sum": 1.0}),
            ("long-w768", "exact", {"n": 5, "dlp_sum": 1.0, "move_n": 4, "move_sum": 2.0}),
            ("demo", "exact", {"n": 5, "dlp_sum": 9.0, "move_n": 5, "move_sum": 9.0}),
            ("long-w768", "exact", None)]
    log.write_bytes(b"".join(orjson.dumps({"category": c, "bucket": b, "tokstats": t})
                             + b"\n" for c, b, t in rows))
    cuts = position.by_cut(log)
    assert set(cuts) == {32, 768}  # other categories and rounds without stats: left out
    assert cuts[32]["rounds"] == 2 and cuts[32]["diverged"] == 1
    assert math.isclose(cuts[32]["move_mean"], 0.1) and math.isclose(cuts[32]["dlp_mean"], 0.02)
    assert math.isclose(cuts[768]["move_mean"], 0.5) and math.isclose(cuts[768]["dlp_mean"], 0.2)


def test_ppl_position_bands() -> None:
    from shadow_burnin.core.ppl import TokenScore

    ppl_position = load("ppl_position")
    s1 = [TokenScore("a", -0.1, {"a": -0.1, "b": -2.0})] * 100
    s2 = ([TokenScore("a", -0.2, {"a": -0.2, "b": -1.5})] * 60
          + [TokenScore("a", -0.9, {"a": -0.9, "b": -0.5})] * 40)
    bands = ppl_position.compare(s1, s2)
    assert [(b["from"], b["tokens"]) for b in bands] == [(0, 64), (64, 36)]
    first, second = bands
    # positions 0–59 move by 0.1, 60–63 by 0.8; the top-1 flips from position 60 on
    assert math.isclose(first["dlp_mean"], (60 * 0.1 + 4 * 0.8) / 64)
    assert first["top1_differs"] == 4 and second["top1_differs"] == 36
    assert math.isclose(second["dlp_mean"], 0.8)
    assert second["kl_mean"] > first["kl_mean"] > 0
