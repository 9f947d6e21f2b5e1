"""``divergences`` and bench's forensics figures on a hand-made log."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.cli.conftest import invoke


def side(text: str, finish: str = "stop") -> dict[str, Any]:
    return {"text": text, "latency_ms": 10.0, "ttft_ms": None, "status": 200,
            "finish_reason": finish, "completion_tokens": 3, "error": None}


def rnd(n: int, bucket: str, t1: str, t2: str, fx: dict | None = None,
        refire: str | None = None, prompt: str = "p1", category: str = "c") -> dict:
    r: dict[str, Any] = {"schema": 1, "round": n, "ts": f"2026-04-20T00:00:{n:02d}.000Z",
                         "prompt_id": prompt, "category": category, "bucket": bucket,
                         "divergence_byte": None, "prefix_match_chars": None,
                         "v1": side(t1), "v2": side(t2)}
    if fx:
        r["forensics"] = fx
    if refire:
        r["refire"] = {"outcome": refire, "n": 1, "v1_same": 1, "v2_same": 1, "pair_exact": 0}
    return r


def aa(n: int, bucket: str, swing: float | None = None) -> dict:
    out = {"kind": "aa", "schema": 1, "round": n, "ts": f"2026-04-20T00:00:{n:02d}.500Z",
           "prompt_id": "p1", "category": "c", "target": "v1", "bucket": bucket,
           "a": side("x"), "b": side("x" if bucket == "exact" else "y")}
    if swing is not None:
        out["forensics"] = {"verdict": "near-tie", "swing": swing}
    return out


LONG = "word " * 20


@pytest.fixture
def log(tmp_path: Path) -> Path:
    records = [
        rnd(1, "exact", "same", "same"),
        rnd(2, "no-match", LONG + "the cat\tsat", LONG + "the dog\tsat",
            {"verdict": "near-tie", "divergence_token": 21, "swing": 0.03, "a": " cat",
             "b": " dog"}, "reproducible"),
        aa(2, "exact"),
        rnd(3, "no-match", "Paris is big", "London is big",
            {"verdict": "regression", "divergence_token": 0, "swing_min": 2.9},
            "flaky-v2", prompt="p2", category="d"),
        rnd(4, "prefix-only", "short", "short and long",
            {"cause": "stop", "shorter": "v1"}, "reproducible"),
        rnd(5, "no-match", "a\u00a0b", "a b"),  # logged without forensics
        aa(5, "no-match", 0.04),
    ]
    path = tmp_path / "log.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


def test_divergences_rows(log: Path) -> None:
    res = invoke("divergences", "--log", log)
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert "4 non-exact rounds" in out
    assert "near-tie" in out and "regression" in out and "prefix stop" in out
    assert "⟦c⟧at→sat" in out and "⟦d⟧og→sat" in out  # highlighted, tab shown
    assert "v1 … word word" in out  # left context cut to 40 characters
    assert "⟦⍽⟧b" in out  # a no-break space made visible
    assert "≥2.90" in out and "flaky-v2" in out


def test_divergences_json_and_filters(log: Path) -> None:
    rows = [orjson.loads(line) for line in
            invoke("divergences", "--log", log, "--json").stdout.splitlines()]
    assert [r["round"] for r in rows] == [2, 3, 4, 5]
    near = rows[0]
    assert near["verdict"] == "near-tie" and near["divergence_token"] == 21
    ctx = near["context"]
    assert len(ctx["before"]) == 40 and ctx["v1"].startswith("cat") and ctx["cut_left"]
    assert rows[3]["verdict"] is None  # not analysed

    def ids(*args: str) -> list[int]:
        res = invoke("divergences", "--log", log, "--json", *args)
        return [orjson.loads(line)["round"] for line in res.stdout.splitlines()]

    assert ids("--verdict", "regression") == [3]
    assert ids("--verdict", "stop") == [4]
    assert ids("--category", "d") == [3]
    assert ids("--since", "2026-04-20T00:00:03Z", "--until", "2026-04-20T00:00:05Z") == [3, 4]
    assert ids("--limit", "2") == [4, 5]


def test_divergences_errors(tmp_path: Path, log: Path) -> None:
    res = invoke("divergences", "--log", tmp_path / "missing.jsonl")
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1
    assert invoke("divergences", "--log", log, "--verdict", "x").exit_code == 2
    assert "no non-exact rounds" in invoke("divergences", "--log", log, "--category",
                                           "zzz").stdout


def test_bench_json_has_forensics_and_aa(log: Path) -> None:
    s = orjson.loads(invoke("bench", "--log", log, "--json").stdout)
    assert s["rounds"] == 5  # A/A records are not rounds
    fx = s["forensics"]
    assert fx["no_match"] == {"rounds": 3, "verdicts": {"near-tie": 1, "regression": 1,
                                                       "unexplained": 0, "not-analysed": 1}}
    assert fx["prefix_only"]["causes"]["stop"] == 1
    assert fx["refire"] == {"rounds": 3, "outcomes": {"reproducible": 2, "flaky-v1": 0,
                                                       "flaky-v2": 1, "flaky-both": 0,
                                                       "incomplete": 0}}
    hist = {b["range"]: b["rounds"] for b in fx["divergence_token_histogram"]}
    assert hist["0"] == 1 and hist["16–31"] == 1 and sum(hist.values()) == 2
    assert fx["top_prompts"][0] == {"prompt_id": "p1", "category": "c", "divergent": 3,
                                    "near-tie": 1, "regression": 0, "unexplained": 0,
                                    "flaky": 0}
    a = s["aa"]
    assert (a["records"], a["parity"], a["exact"]) == (2, 2, 1)
    assert a["ab_exact_rate"] == pytest.approx(0.2) and a["aa_exact_rate"] == 0.5
    lo, hi = a["ab_minus_aa_ci95"]
    assert lo < a["ab_minus_aa"] < hi and a["swing_p99"] == pytest.approx(0.04)


def test_bench_text_shows_forensics(log: Path) -> None:
    out = invoke("bench", "--log", log).stdout
    assert "divergence forensics" in out and "near-tie 1" in out
    assert "first differing token" in out
    # one "top divergent prompts" table, with the forensics verdict counts in it
    assert out.count("top divergent prompts") == 1 and "top prompts by" not in out
    assert "regression" in out.split("top divergent prompts")[1].split("\n")[2]
    assert "A/A noise floor" in out and "A/B − A/A" in out


def test_bench_window_applies_to_aa(log: Path) -> None:
    s = orjson.loads(invoke("bench", "--log", log, "--json", "--until",
                            "2026-04-20T00:00:04Z").stdout)
    assert s["rounds"] == 3 and s["aa"]["records"] == 1


@pytest.mark.parametrize("calibrate", [True, False])
def test_run_calibration_starts_from_the_logs_aa_noise(log: Path, calibrate: bool) -> None:
    from shadow_burnin.app.burnin import forensics_plan, plan_for
    from shadow_burnin.cli.options import load_config

    with log.open("ab") as f:
        f.write(orjson.dumps({**aa(6, "exact"), "noise": {"moves": [0.2, 0.0],
                                                          "drifts": [0.1, 0.0]}}) + b"\n")
    cfg = load_config(None, {"v1": {"url": "http://127.0.0.1:1"},
                             "v2": {"url": "http://127.0.0.1:2"},
                             "forensics": {"calibrate": calibrate}}, log_path=log)
    fplan = forensics_plan(cfg, plan_for(cfg, "s", 1))
    assert fplan.calibrate is calibrate
    noise = fplan.aa_noise
    assert noise is not None
    if calibrate:
        assert (noise.swings, noise.moves, noise.drifts) == ([0.04], [0.2, 0.0], [0.1, 0.0])
    else:
        assert (noise.swings, noise.moves, noise.drifts) == ([], [], [])


def test_bench_shows_the_aa_noise_samples(tmp_path: Path) -> None:
    records = [rnd(1, "exact", "same", "same"),
               {**aa(1, "exact"), "noise": {"moves": [0.02, 0.07], "drifts": [0.011, 0.03]}},
               aa(2, "no-match", 0.04)]
    path = tmp_path / "log.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    out = invoke("bench", "--log", path).stdout
    assert "(1 flips, 2 matched tokens)" in out
    assert "A/A drift p99" in out and "0.030 nats" in out
