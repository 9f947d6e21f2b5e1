"""``bench`` shows the run-level verdict (terminal and ``--json``) from a hand-made log."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from tests.cli.conftest import invoke
from tests.cli.test_divergences import rnd


def flip(swing: float, drift: float, in_top: bool = True) -> dict[str, Any]:
    return {"verdict": "unexplained", "reason": "r", "divergence_token": 3, "swing": swing,
            "prefix_drift": drift, "b_in_v1_top": in_top, "a_in_v2_top": True,
            "margin_v1": swing / 2, "margin_v2": swing / 2}


def write(path: Path, flips: list[dict[str, Any]], exact: int) -> Path:
    records = [rnd(i + 1, "exact", "same", "same") for i in range(exact)]
    records += [rnd(exact + i + 1, "no-match", "a b", "a c", fx, "reproducible")
                for i, fx in enumerate(flips)]
    records.append(rnd(exact + len(flips) + 1, "no-match", "x", "y"))  # no forensics
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


def test_bench_noise_pair(tmp_path: Path) -> None:
    log = write(tmp_path / "log.jsonl", [flip(0.05 * i, 0.02 * i) for i in range(1, 11)], 20)
    out = orjson.loads(invoke("bench", "--log", log, "--json").stdout)
    rv = out["forensics"]["run_verdict"]
    assert rv["decision"] == "noise" and rv["flips"] == 10 and rv["unanalysed"] == 1
    assert rv["swing_max"] == 0.5 and rv["tests"][0]["observed"] == 0
    text = invoke("bench", "--log", log).stdout
    assert "run-level verdict: noise — 10 flips" in text
    assert "consistent with numeric noise" in text


def test_bench_changed_pair(tmp_path: Path) -> None:
    flips = [flip(1.5, 0.6) for _ in range(5)] + [flip(0.2, 0.1, in_top=False)] * 2
    log = write(tmp_path / "log.jsonl", flips, 5)
    out = orjson.loads(invoke("bench", "--log", log, "--json").stdout)
    rv = out["forensics"]["run_verdict"]
    assert rv["decision"] == "changed"
    assert [t["observed"] for t in rv["tests"]] == [5, 2, 0]
    assert "the distribution changed" in invoke("bench", "--log", log).stdout


def test_bench_exact_only(tmp_path: Path) -> None:
    log = write(tmp_path / "log.jsonl", [], 6)
    rv = orjson.loads(invoke("bench", "--log", log, "--json").stdout)["forensics"][
        "run_verdict"]
    # the one no-match round has no forensics: nothing to judge it by
    assert rv["decision"] == "unknown" and rv["unanalysed"] == 1


def gate_config(tmp_path: Path) -> Path:
    config = tmp_path / "burnin.toml"
    config.write_text('[gates.verdict]\nmetric = "run_changed"\ncomparator = "=="\n'
                      'target = 0\n')
    return config


def verdict_gate(out: dict[str, Any]) -> dict[str, Any]:
    return next(g for g in out["gates"] if g["gate"] == "verdict")


def test_verdict_gate_red_on_a_changed_run(tmp_path: Path) -> None:
    log = write(tmp_path / "log.jsonl", [flip(1.5, 0.6) for _ in range(6)], 5)
    res = invoke("gates", "--log", log, "--config", gate_config(tmp_path), "--json")
    assert res.exit_code == 1
    gate = verdict_gate(orjson.loads(res.stdout))
    assert gate["state"] == "fail" and gate["current"] == 1 and gate["samples"] == 6


def test_verdict_gate_green_on_noise(tmp_path: Path) -> None:
    log = write(tmp_path / "log.jsonl", [flip(0.2, 0.1) for _ in range(6)], 5)
    res = invoke("gates", "--log", log, "--config", gate_config(tmp_path), "--json")
    gate = verdict_gate(orjson.loads(res.stdout))
    assert gate["state"] == "pass" and gate["current"] == 0


def moved(mean: float, tokens: int = 20) -> dict[str, Any]:
    """One exact round's token statistics: ``tokens`` matched tokens whose margins moved
    by ``mean`` on average (spread ``mean``), all at wide margins."""
    from shadow_burnin.core.tokstats import FIELDS, MARGIN_FIELDS

    stats: dict[str, Any] = dict.fromkeys(FIELDS, 0.0)
    stats.update(n=tokens, move_n=tokens, move_sum=mean * tokens,
                 move_sq=2 * mean * mean * tokens, move_max=3 * mean, k=5,
                 topk_overlap=float(tokens), topk_same=tokens, ctx=40,
                 div_margin=None, div_swing=None, div_outside=None)
    stats.update(dict.fromkeys(MARGIN_FIELDS, 0))
    return stats


def path_gate(tmp_path: Path, mean: float) -> dict[str, Any]:
    records = []
    for i in range(12):
        r = rnd(i + 1, "exact", "same", "same")
        r["tokstats"] = moved(mean)
        records.append(r)
    log = tmp_path / f"path-{mean}.jsonl"
    log.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    config = tmp_path / "path.toml"
    config.write_text('[gates.path]\nmetric = "run_off_path"\ncomparator = "=="\n'
                      'target = 0\n')
    out = orjson.loads(invoke("gates", "--log", log, "--config", config, "--json").stdout)
    rv = orjson.loads(invoke("bench", "--log", log, "--json").stdout)["forensics"][
        "run_verdict"]
    return {"gate": next(g for g in out["gates"] if g["gate"] == "path"), "rv": rv}


def test_off_path_gate_for_a_team_on_one_kernel(tmp_path: Path) -> None:
    """Margins moved like another kernel's (0.16 nats over 240 tokens): noise, but off
    one kernel's thread/batch path, so the strict ``run_off_path`` gate is red; a run
    moving them like one kernel's (0.05) keeps it green."""
    other = path_gate(tmp_path, 0.16)
    assert other["rv"]["decision"] == "noise"
    assert other["rv"]["numeric_path"] == "other"
    assert other["gate"]["state"] == "fail" and other["gate"]["current"] == 1
    same = path_gate(tmp_path, 0.05)
    assert same["rv"]["numeric_path"] == "same"
    assert same["gate"]["state"] == "pass" and same["gate"]["current"] == 0
