"""Gate evaluation: pure and table-driven."""

from __future__ import annotations

import numpy as np
import pytest

from shadow_burnin.core.columns import BUCKET_CODE, Columns
from shadow_burnin.core.figures import bootstrap_p95_gap, halt_figures, log_figures, ppl_figures
from shadow_burnin.core.gates import (
    DEFAULT_GATES,
    FAIL,
    PASS,
    WAIT,
    Figure,
    GateSpec,
    evaluate,
    evaluate_gate,
    merge_specs,
)
from shadow_burnin.core.halt import HaltStatus
from shadow_burnin.core.stats import summarise


def spec(comparator: str, target: float, **kw) -> GateSpec:
    return GateSpec("g", kw.pop("metric", "p95_gap_ms"), comparator, target, **kw)


@pytest.mark.parametrize(("comparator", "target", "value", "state"), [
    (">=", 0.9, 0.9, PASS), (">=", 0.9, 0.89, FAIL),
    (">", 0.9, 0.91, PASS), (">", 0.9, 0.9, FAIL),
    ("<=", 100, 100, PASS), ("<=", 100, 100.5, FAIL),
    ("<", 100, 99.9, PASS), ("<", 100, 100, FAIL),
    ("==", 0, 0, PASS), ("==", 0, 1, FAIL),
    ("!=", 0, 1, PASS), ("!=", 0, 0, FAIL),
])
def test_every_comparator(comparator: str, target: float, value: float, state: str) -> None:
    assert evaluate_gate(spec(comparator, target), Figure(value)).state == state


@pytest.mark.parametrize(("value", "spec_baseline", "fig_baseline", "state"), [
    (12.34, None, 12.30, PASS),      # |Δ| 0.04 ≤ 0.05, baseline = v1's measured PPL
    (12.36, None, 12.30, FAIL),      # |Δ| 0.06
    (12.25, None, 12.30, PASS),      # within works both ways
    (12.24, None, 12.30, FAIL),
    (12.36, 12.33, 12.30, PASS),     # a configured baseline wins over the measured one
    (12.30, None, None, WAIT),       # no baseline at all: waiting (must_have_data)
])
def test_within(value, spec_baseline, fig_baseline, state) -> None:
    g = GateSpec("ppl", "ppl_v2", "within", 0.05, baseline=spec_baseline)
    result = evaluate_gate(g, Figure(value, baseline=fig_baseline))
    assert result.state == state
    if state != WAIT:
        assert result.baseline == (spec_baseline if spec_baseline is not None else fig_baseline)


@pytest.mark.parametrize(("must", "value", "state"), [
    (True, None, WAIT), (False, None, PASS), (True, float("nan"), WAIT),
    (False, 10.0, FAIL), (True, 50.0, PASS),
])
def test_must_have_data(must: bool, value, state: str) -> None:
    g = GateSpec("p", "median_prefix_match_chars", ">=", 40, must_have_data=must)
    assert evaluate_gate(g, Figure(value)).state == state


@pytest.mark.parametrize(("comparator", "value", "grows", "state"), [
    (">=", 1000, True, WAIT),     # rounds: more will come, not a failure
    (">=", 1000, False, FAIL),    # a rate below target: a failure
    (">", 10, True, WAIT),
    ("<", 60000, True, FAIL),     # a growing figure already over a ceiling stays failed
])
def test_waiting_vs_failing(comparator: str, value: float, grows: bool, state: str) -> None:
    g = GateSpec("rounds", "rounds", comparator, 50_000)
    assert evaluate_gate(g, Figure(value, grows=grows)).state == state


@pytest.mark.parametrize(("comparator", "target", "value", "interval", "state"), [
    (">=", 0.9, 0.95, (0.91, 0.97), PASS),   # Wilson lower bound above target
    (">=", 0.9, 0.92, (0.88, 0.95), WAIT),   # straddles: the point alone would pass
    (">=", 0.9, 0.85, (0.80, 0.89), FAIL),   # upper bound below target
    ("<", 100, 80, (60, 95), PASS),          # bootstrap interval of the p95 gap
    ("<", 100, 90, (70, 130), WAIT),
    ("<", 100, 120, (105, 140), FAIL),
    ("==", 0, 0, (-1, 1), PASS),             # == ignores the interval
])
def test_statistical(comparator, target, value, interval, state) -> None:
    g = spec(comparator, target)
    assert evaluate_gate(g, Figure(value, interval=interval), statistical=True).state == state
    point = evaluate_gate(g, Figure(value, interval=interval), statistical=False).state
    assert point in (PASS, FAIL)  # without statistical the point decides, never waits


def test_report_verdict_and_exit_code() -> None:
    specs = [GateSpec("a", "rounds", ">=", 10), GateSpec("b", "p95_gap_ms", "<", 100),
             GateSpec("off", "rounds", ">=", 1e9, enabled=False)]
    green = evaluate(specs, {"rounds": Figure(20), "p95_gap_ms": Figure(5)})
    assert (green.verdict, green.exit_code, len(green.results)) == (PASS, 0, 2)
    waiting = evaluate(specs, {"rounds": Figure(5, grows=True), "p95_gap_ms": Figure(5)})
    assert (waiting.verdict, waiting.exit_code) == (WAIT, 3)
    red = evaluate(specs, {"rounds": Figure(5, grows=True), "p95_gap_ms": Figure(500)})
    assert (red.verdict, red.exit_code) == (FAIL, 1)
    missing = evaluate(specs, {})
    assert missing.verdict == WAIT and missing.to_json()["gates"][0]["current"] is None


def test_defaults_are_the_earlier_cutover_md() -> None:
    table = {g.name: (g.metric, g.comparator, g.target) for g in DEFAULT_GATES if g.enabled}
    assert table == {
        "ppl": ("ppl_v2", "within", 0.05), "exact_match": ("exact_match_rate", ">=", 0.9),
        "rounds": ("rounds", ">=", 50_000), "v2_unreachable": ("v2_unreachable_rate", "<", 0.001),
        "p95_gap": ("p95_gap_ms", "<", 100), "prefix_match":
            ("median_prefix_match_chars", ">=", 40), "wall_time": ("wall_time_h", ">=", 72),
        "halt": ("active_halt", "==", 0),
    }


def test_merge_specs() -> None:
    specs = merge_specs({"exact_match": {"target": 0.95}, "drift": {"enabled": True},
                         "kld": {"metric": "kld_mean", "comparator": "<=", "target": 0.01}})
    by = {s.name: s for s in specs}
    assert by["exact_match"].target == 0.95 and by["exact_match"].comparator == ">="
    assert by["exact_match"].describe() == "exact_match_rate ≥ 95 %"  # label follows target
    assert by["drift"].enabled and by["kld"].must_have_data
    assert [s.name for s in specs][-1] == "kld"
    for bad, message in [
        ({"x": {"metric": "rounds"}}, "gates.x: a new gate needs comparator, target"),
        ({"rounds": {"targe": 1}}, "unknown key gates.rounds.targe"),
        ({"rounds": {"target": "many"}}, "gates.rounds.target must be a number"),
        ({"rounds": {"comparator": "=>"}}, "gates.rounds.comparator must be one of"),
        ({"rounds": {"metric": "speed"}}, "gates.rounds.metric: unknown metric 'speed'"),
        ({"ppl": {"target": -1}}, "gates.ppl.target: a 'within' tolerance must be >= 0"),
        ({"halt": {"enabled": 1}}, "gates.halt.enabled must be true or false"),
    ]:
        with pytest.raises(ValueError, match=message.replace("(", r"\(")):
            merge_specs(bad)


def columns(buckets: list[str], v1: list[float], v2: list[float], ts: list[float]) -> Columns:
    n = len(buckets)
    return Columns(
        bucket=np.array([BUCKET_CODE[b] for b in buckets], dtype=np.int8),
        latency={"v1": np.array(v1, float), "v2": np.array(v2, float)},
        ttft={"v1": np.full(n, np.nan), "v2": np.full(n, np.nan)},
        prefix=np.array([np.nan if b == "exact" else 50 for b in buckets], float),
        category=np.zeros(n, np.int32), prompt=np.zeros(n, np.int32),
        ts=np.array(ts, float), categories=["c"], prompts=["p"],
    )


def test_log_figures_and_statistical_mode() -> None:
    rng = np.random.default_rng(1)
    n = 400
    buckets = ["exact"] * 380 + ["no-match"] * 20
    v1 = rng.normal(200, 10, n)
    v2 = v1 + 30 + rng.normal(0, 5, n)
    cols = columns(buckets, list(v1), list(v2), [1000.0 + 3600 * i / 10 for i in range(n)])
    s = summarise(cols)
    figs = log_figures(s, cols, statistical=True, rng=np.random.default_rng(7), bootstrap=300)
    assert figs["rounds"].value == 400 and figs["rounds"].grows
    assert figs["wall_time_h"].value == pytest.approx(39.9)
    assert figs["exact_match_rate"].value == 0.95
    assert figs["exact_match_rate"].interval == s.exact_match_ci95
    lo, hi = figs["p95_gap_ms"].interval
    assert lo < s.p95_gap_ms < hi and hi - lo < 20
    again = log_figures(s, cols, statistical=True, rng=np.random.default_rng(7),
                        bootstrap=300)
    assert again["p95_gap_ms"].interval == (lo, hi)  # seeded: the same answer every time
    assert figs["median_prefix_match_chars"].value == 50
    plain = log_figures(s, cols)
    assert plain["exact_match_rate"].interval is None and plain["p95_gap_ms"].interval is None


def test_bootstrap_needs_pairs() -> None:
    v = np.array([1.0] * 10)
    assert bootstrap_p95_gap(v, v, np.random.default_rng(0)) is None


def test_halt_and_ppl_figures() -> None:
    assert halt_figures(HaltStatus())["active_halt"].value == 0
    active = HaltStatus(True, {"ts": "2026-01-01T00:00:00.000Z", "round": 51,
                               "window": {"no_match": 11, "parity_rounds": 51}}, None, 1, 0)
    fig = halt_figures(active)["active_halt"]
    assert fig.value == 1 and "round 51" in fig.note
    assert evaluate_gate(DEFAULT_GATES[7], fig).state == FAIL
    run = {"ts": "2026-01-01T00:00:00Z", "v1": {"ppl": 20.0, "tokens": 1023},
           "v2": {"ppl": 20.03, "tokens": 1023},
           "paired": {"positions": 1023, "kld_mean": 0.001, "same_top1_rate": 0.99,
                      "nll_diff_mean": 0.0015, "rms_dp": 0.002}}
    figs = ppl_figures(run)
    assert figs["ppl_v2"].baseline == 20.0 and figs["ppl_v2"].samples == 1023
    assert evaluate_gate(DEFAULT_GATES[0], figs["ppl_v2"]).state == PASS
    assert ppl_figures(None) == {}
