"""A/A vs A/B: Newcombe's interval, the A/A noise samples and the calibration of τ_tie and
τ_drift from them, the A/A summary."""

from __future__ import annotations

import math

import pytest

from shadow_burnin.core.aa import (
    MIN_AA_PAIRS,
    NoiseSamples,
    aa_noise,
    aa_samples,
    aa_swings,
    calibrated_tau_tie,
    newcombe_diff,
    summarise_aa,
)
from shadow_burnin.core.verdict import Alt, Thresholds, Token


def tok(text: str, lp: float, *alts: tuple[str, float], merged: bool = False) -> Token:
    return Token(text, lp, text.encode(), (Alt(text, lp, text.encode()),
                                           *(Alt(a, alp, a.encode()) for a, alp in alts)),
                 merged)


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
    assert calibrated_tau_tie(0.1, [0.2, math.inf, float("nan")], 1) == pytest.approx(0.2)
    # fewer than 100 finite samples: the default (their p99 would be their maximum)
    assert calibrated_tau_tie(0.1, [0.3] * 99 + [math.inf]) == 0.1
    assert calibrated_tau_tie(0.1, [0.3] * 99, min_samples=99) == pytest.approx(0.3)


# aa_noise: (tokens of copy a, tokens of copy b) -> (moves, drifts)
NOISE_CASES = {
    "identical copies: zeros": (
        [tok("A", -0.1, ("B", -2.0)), tok("C", -0.5, ("D", -0.7))],
        [tok("A", -0.1, ("B", -2.0)), tok("C", -0.5, ("D", -0.7))],
        [0.0, 0.0], [0.0, 0.0]),
    "runner-up margin moves": (
        # margins 1.9 → 1.6 and 0.2 → 0.25; the chosen tokens' logprobs by 0.1 and 0.05
        [tok("A", -0.1, ("B", -2.0), ("E", -2.5)), tok("C", -0.5, ("D", -0.7))],
        [tok("A", -0.2, ("B", -1.8), ("E", -3.0)), tok("C", -0.45, ("D", -0.7))],
        [0.3, 0.05], [0.1, 0.05]),
    "runner-up missing from b's top-K: a drift but no move": (
        [tok("A", -0.1, ("B", -2.0))], [tok("A", -0.1, ("E", -2.0))], [], [0.0]),
    "no alternatives listed: a drift but no move": (
        [Token("A", -0.1)], [Token("A", -0.3)], [], [0.2]),
    "only the matched tokens before the first difference": (
        [tok("A", -0.1, ("B", -2.0)), tok("C", -0.5, ("D", -0.6)), tok("X", -1.0)],
        [tok("A", -0.2, ("B", -2.0)), tok("D", -0.5, ("C", -0.6)), tok("X", -3.0)],
        [0.1], [0.1]),
    "divergence at token 0: nothing": (
        [tok("A", -0.1, ("B", -0.2))], [tok("B", -0.1, ("A", -0.2))], [], []),
    "one stream a prefix of the other": (
        [tok("A", -0.1, ("B", -2.0))], [tok("A", -0.1, ("B", -2.0)), tok("C", -1.0)],
        [0.0], [0.0]),
    "missing logprob or merged byte pieces are skipped": (
        [Token("A", None), tok("é", -0.1, ("e", -1.0), merged=True), tok("C", -0.5)],
        [tok("A", -0.1), tok("é", -0.9, ("e", -1.0), merged=True), tok("C", -0.6)],
        [], [0.1]),
}


@pytest.mark.parametrize("case", NOISE_CASES, ids=list(NOISE_CASES))
def test_aa_noise(case: str) -> None:
    ta, tb, moves, drifts = NOISE_CASES[case]
    noise = aa_noise(ta, tb)
    assert noise["moves"] == pytest.approx(moves) and noise["drifts"] == pytest.approx(drifts)


def test_noise_samples_from_records() -> None:
    records = [
        {"kind": "aa", "bucket": "exact", "noise": {"moves": [0.1, 0.0], "drifts": [0.2]}},
        {"kind": "aa", "bucket": "no-match", "forensics": {"swing": 0.3},
         "noise": {"moves": [0.05], "drifts": []}},
        {"kind": "aa", "forensics": {"swing": None}, "noise": {"moves": [math.nan, True,
                                                                       "x", 0.4]}},
        {"kind": "aa", "noise": "garbage"},
        {"bucket": "no-match", "forensics": {"swing": 9.0}, "noise": {"moves": [9.0]}},
    ]
    s = aa_samples(records)
    assert s.swings == [0.3] and s.moves == [0.1, 0.0, 0.05, 0.4] and s.drifts == [0.2]
    assert s.tie_samples() == [0.3, 0.1, 0.0, 0.05, 0.4]


def test_calibrated_thresholds() -> None:
    th = Thresholds(tau_tie=0.1, tau_drift=0.05, tau_regress=0.5)
    assert NoiseSamples().calibrated(th) == th  # no A/A noise yet: the defaults
    zeros = NoiseSamples(moves=[0.0] * 50, drifts=[0.0] * 50)  # v1 against itself
    assert zeros.calibrated(th) == th
    # 100 tie samples: p99 sits between the two largest (0.3 and the flip's 0.36)
    noisy = NoiseSamples(swings=[0.36], moves=[0.1] * 98 + [0.3],
                         drifts=[0.01] * 90 + [0.2] * 10)
    cal = noisy.calibrated(th)
    assert cal.tau_tie == pytest.approx(0.3006)
    assert cal.tau_drift == pytest.approx(0.2) and cal.tau_regress == 0.5
    # each threshold waits for its own 100 samples
    few = NoiseSamples(moves=[0.3] * 100, drifts=[0.3] * 99).calibrated(th)
    assert (few.tau_tie, few.tau_drift) == (pytest.approx(0.3), 0.05)
    # a single large sample among many small ones does not set the threshold alone
    assert NoiseSamples(moves=[0.0] * 999 + [5.0]).calibrated(th).tau_tie == 0.1


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
    assert s.verdict == "too few A/A pairs to judge (10 < 30)"
    assert s.swing_p99 == pytest.approx(0.05) and s.drift_p99 is None
    assert (s.flips, s.noise_tokens) == (1, 0)
    assert aa_swings(records) == [0.05]
    js = s.to_json()
    assert isinstance(js["ab_minus_aa_ci95"], list)


def test_summarise_aa_pools_swings_and_moves() -> None:
    records = [{**aa("exact"), "noise": {"moves": [0.0, 0.1], "drifts": [0.0, 0.2]}},
               {**aa("no-match", 0.3, "unexplained"), "noise": {"moves": [0.0],
                                                                "drifts": [0.0]}}]
    s = summarise_aa(records, ab_exact=1, ab_parity=2)
    assert (s.flips, s.noise_tokens) == (1, 3)
    assert s.swing_p99 == pytest.approx(0.294)  # p99 of {0.3, 0, 0.1, 0}
    assert s.drift_p99 == pytest.approx(0.196)  # p99 of {0, 0.2, 0}


def test_summarise_aa_without_records() -> None:
    s = summarise_aa([], ab_exact=3, ab_parity=4)
    assert s.records == 0 and s.aa_exact_rate is None and s.ab_minus_aa is None


@pytest.mark.parametrize(("pairs", "exact", "ab", "verdict"), [
    # the issue's case: 1–3 pairs made "−75 pts (CI −91 – +9): within v1's own noise"
    (1, 0, (75, 100), "too few A/A pairs to judge (1 < 30)"),
    (3, 0, (75, 100), "too few A/A pairs to judge (3 < 30)"),
    (MIN_AA_PAIRS - 1, MIN_AA_PAIRS - 1, (1, 100), "too few A/A pairs to judge (29 < 30)"),
    (MIN_AA_PAIRS, MIN_AA_PAIRS, (1, 100), "beyond v1's own noise"),
    (MIN_AA_PAIRS, MIN_AA_PAIRS - 1, (97, 100), "within v1's own noise"),
    (40, 0, (100, 100), "A/B agrees more than A/A"),
])
def test_too_few_aa_pairs_are_not_judged(pairs: int, exact: int, ab: tuple[int, int],
                                         verdict: str) -> None:
    records = [aa("exact")] * exact + [aa("no-match", None, "regression")] * (pairs - exact)
    s = summarise_aa(records, ab_exact=ab[0], ab_parity=ab[1])
    assert s.parity == pairs and s.verdict == verdict
    assert summarise_aa(records, ab_exact=0, ab_parity=0).verdict is None  # no A/B rounds
