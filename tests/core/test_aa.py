"""A/A vs A/B: Newcombe's interval, calibration of τ_tie, the A/A summary."""

from __future__ import annotations

import math

import pytest

from shadow_burnin.core.aa import aa_swings, calibrated_tau_tie, newcombe_diff, summarise_aa


def test_newcombe_matches_the_published_example() -> None:
    # Newcombe (1998), Table II example (e): 56/70 vs 48/80 → d = 0.2, 95% CI 0.0524 – 0.3339
    d, (lo, hi) = newcombe_diff(56, 70, 48, 80)  # type: ignore[misc]
    assert d == pytest.approx(0.2)
    assert lo == pytest.approx(0.0524, abs=5e-4) and hi == pytest.approx(0.3339, abs=5e-4)


@pytest.mark.parametrize(("x1", "n1", "x2", "n2"), [(96, 100, 98, 100), (10, 10, 0, 10),
                                                    (0, 5, 5, 5), (500, 1000, 1, 3)])
def test_newcombe_interval_holds_the_difference(x1: int, n1: int, x2: int, n2: int) -> None:
    d, (lo, hi) = newcombe_diff(x1, n1, x2, n2)  # type: ignore[misc]
    assert -1.0 <= lo <= d <= hi <= 1.0


def test_newcombe_needs_both_samples() -> None:
    assert newcombe_diff(1, 0, 1, 2) is None and newcombe_diff(1, 2, 0, 0) is None


def test_calibrated_tau_tie() -> None:
    assert calibrated_tau_tie(0.1, []) == 0.1
    assert calibrated_tau_tie(0.1, [0.01, 0.02]) == 0.1
    assert calibrated_tau_tie(0.1, [0.3] * 99 + [0.0]) == pytest.approx(0.3)
    assert calibrated_tau_tie(0.1, [0.2, math.inf, float("nan")]) == pytest.approx(0.2)


def aa(bucket: str, swing: float | None = None, verdict: str | None = None) -> dict:
    rec: dict = {"kind": "aa", "bucket": bucket}
    if verdict:
        rec["forensics"] = {"verdict": verdict, **({"swing": swing} if swing is not None
                                                   else {})}
    return rec


def test_summarise_aa() -> None:
    records = [aa("exact")] * 8 + [aa("no-match", 0.05, "near-tie"),
                                   aa("no-match", None, "regression"),
                                   aa("v1-unreachable"), {"kind": "event"}]
    s = summarise_aa(records, ab_exact=90, ab_parity=100)
    assert (s.records, s.parity, s.exact) == (11, 10, 8)
    assert s.aa_exact_rate == 0.8 and s.ab_exact_rate == 0.9
    assert s.ab_minus_aa == pytest.approx(0.1)
    lo, hi = s.ab_minus_aa_ci95  # type: ignore[misc]
    assert lo < 0 < hi  # ten A/A records cannot tell 90 % from 80 %
    assert s.verdicts == {"near-tie": 1, "regression": 1}
    assert s.swing_p99 == pytest.approx(0.05)
    assert aa_swings(records) == [0.05]
    js = s.to_json()
    assert isinstance(js["ab_minus_aa_ci95"], list)


def test_summarise_aa_without_records() -> None:
    s = summarise_aa([], ab_exact=3, ab_parity=4)
    assert s.records == 0 and s.aa_exact_rate is None and s.ab_minus_aa is None
