"""The run-level verdict on synthetic flips where the right answer is known."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shadow_burnin.core.runverdict import (
    DEFAULT_PRIOR,
    Flip,
    binom_tail,
    flip_of,
    run_verdict,
    run_verdict_arrays,
    widen,
)
from shadow_burnin.core.sidetables import flip_table


def noise_flips(rng: np.random.Generator, n: int) -> list[Flip]:
    """Numeric noise as measured on benign pairs: each flip happens at a near-tie, so the
    swing is a margin move (half-normal, σ 0.25: median ≈ 0.17, p99 ≈ 0.64) and the
    prefix drift is small; both tokens stay in each other's top-K."""
    return [Flip(swing=float(abs(rng.normal(0, 0.25))), drift=float(rng.uniform(0, 0.3)),
                 in_topk=True, reproducible=True) for _ in range(n)]


def shifted_flips(rng: np.random.Generator, n: int) -> list[Flip]:
    """A changed distribution (e.g. a wrong RoPE base): margins move by ~1 nat, drift up
    to 0.7, and now and then a token leaves the other's top-K."""
    return [Flip(swing=float(abs(rng.normal(0, 1.0))), drift=float(rng.uniform(0, 0.7)),
                 in_topk=bool(rng.random() > 0.1), reproducible=True) for _ in range(n)]


def test_binomial_tail_exact() -> None:
    assert binom_tail(0, 10, 0.3) == 1.0
    assert binom_tail(11, 10, 0.3) == 0.0
    assert binom_tail(10, 10, 0.5) == pytest.approx(0.5 ** 10)
    assert binom_tail(1, 10, 0.1) == pytest.approx(1 - 0.9 ** 10)
    want = sum(math.comb(40, i) * 0.05 ** i * 0.95 ** (40 - i) for i in range(5, 41))
    assert binom_tail(5, 40, 0.05) == pytest.approx(want)


def test_no_flips_is_noise() -> None:
    v = run_verdict([], no_match=0)
    assert v.decision == "noise" and v.flips == 0
    assert "every parity round matched" in v.explanation


def test_flips_without_logprobs_are_unknown() -> None:
    v = run_verdict([None, None], no_match=2)
    assert v.decision == "unknown" and v.unanalysed == 2 and "--logprobs" in v.explanation


def test_issue_upgrade_pair_is_noise() -> None:
    # the issue's benign llama.cpp upgrade: 14 flips, margins 0.01–0.40 per side, drifts
    # 0.11–0.26, every token in the other's top-5 — per-round rules called 7 regression
    swings = [0.05, 0.13, 0.18, 0.22, 0.25, 0.31, 0.02, 0.4, 0.55, 0.6, 0.12, 0.3, 0.28, 0.7]
    drifts = [0.11, 0.26, 0.2, 0.15, 0.12, 0.25, 0.18, 0.11, 0.2, 0.22, 0.14, 0.19, 0.26, 0.2]
    flips = [Flip(s, d, in_topk=True, reproducible=True) for s, d in zip(swings, drifts,
                                                                           strict=True)]
    v = run_verdict(flips, no_match=14)
    assert v.decision == "noise"
    assert v.explanation.startswith("14 flips, swings up to 0.70 nats")
    assert "0 outside the noise envelope" in v.explanation
    assert "noise predicts ≤ 0.7 ± 0.8" in v.explanation
    assert v.explanation.endswith("→ consistent with numeric noise")


def test_blatant_rope_like_change() -> None:
    # swings up to 2.3, drifts up to 0.65 (the README's wrong-RoPE row)
    flips = [Flip(s, d, in_topk=True) for s, d in
             [(2.3, 0.65), (1.4, 0.5), (0.3, 0.2), (1.1, 0.3), (0.2, 0.1), (1.9, 0.6),
              (0.5, 0.5), (0.1, 0.05), (1.2, 0.4), (0.8, 0.2)]]
    v = run_verdict(flips)
    assert v.decision == "changed"
    outside = v.tests[0]
    assert (outside.observed, outside.n) == (6, 10) and outside.p_value < 1e-5
    assert "the distribution changed" in v.explanation


def test_repeat_penalty_like_off_top1_picks() -> None:
    reason = ("v2 chose ' the' (-1.2) but ranks ' a' higher (-0.3): its logprobs do not "
              "describe its greedy choice (a sampler setting, e.g. repeat_penalty?)")
    flips = [flip_of({"verdict": "unexplained", "reason": reason, "swing": 0.2,
                      "prefix_drift": 0.01}, "reproducible") for _ in range(3)]
    flips += noise_flips(np.random.default_rng(1), 10)
    v = run_verdict(flips)
    assert v.decision == "changed"
    assert v.tests[2].observed == 3 and v.tests[2].p_value < DEFAULT_PRIOR.alpha


def test_flip_of_reads_forensics() -> None:
    fx = {"verdict": "regression", "reason": "x", "swing_min": 1.5, "prefix_drift": 0.2,
          "b_in_v1_top": False, "a_in_v2_top": True}
    f = flip_of(fx, "flaky-v2")
    assert f == Flip(None, 0.2, 1.5, False, False, False)
    assert flip_of(None) is None
    assert flip_of({"verdict": "unexplained", "reason": "no logprobs from v1"}) is None
    assert flip_of({"swing": float("nan"), "prefix_drift": True}) is None


def test_not_reproducible_reported_not_decisive() -> None:
    flips = [Flip(0.1, 0.05, in_topk=True, reproducible=False) for _ in range(5)]
    v = run_verdict(flips)
    assert v.decision == "noise" and v.not_reproducible == 5
    assert "5 re-fires did not reproduce" in v.explanation


def test_widen_only_widens() -> None:
    assert widen(DEFAULT_PRIOR, 0.3, 0.1) is DEFAULT_PRIOR
    wide = widen(DEFAULT_PRIOR, 1.4, None)
    assert (wide.swing, wide.drift) == (1.4, DEFAULT_PRIOR.drift)
    flips = [Flip(1.2, 0.1, in_topk=True) for _ in range(10)]
    assert run_verdict(flips).decision == "changed"
    assert run_verdict(flips, wide).decision == "noise"


def test_noise_generator_false_alarm_rate() -> None:
    # 300 noise-only runs of 40 flips: a false "changed" must be rare (alpha 0.001 per test)
    changed = sum(run_verdict(noise_flips(np.random.default_rng(seed), 40)).decision ==
                  "changed" for seed in range(300))
    assert changed <= 2


def test_shifted_generator_detected() -> None:
    detected = sum(run_verdict(shifted_flips(np.random.default_rng(seed), 20)).decision ==
                   "changed" for seed in range(200))
    assert detected >= 190


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2 ** 32 - 1), n=st.integers(0, 200))
def test_noise_never_more_alarming_than_its_shift(seed: int, n: int) -> None:
    # the same flips with every swing and drift scaled up can only look less like noise
    base = noise_flips(np.random.default_rng(seed), n)
    v = run_verdict(base)
    bigger = [Flip(f.swing * 4 if f.swing is not None else None,
                   f.drift * 2 if f.drift is not None else None, in_topk=True) for f in base]
    w = run_verdict(bigger)
    assert w.tests[0].observed >= v.tests[0].observed
    if v.decision == "changed":
        assert w.decision == "changed"
    assert v.flips == w.flips == n


def test_flip_of_reads_the_refire_record() -> None:
    fx = {"swing": 0.1, "prefix_drift": 0.0, "b_in_v1_top": True, "a_in_v2_top": True}
    assert flip_of(fx, {"outcome": "reproducible", "n": 1}) == Flip(0.1, 0.0, None, True,
                                                                     False, True)
    assert flip_of(fx, {"outcome": "flaky-v1"}).reproducible is False  # type: ignore[union-attr]
    assert flip_of(fx, {"n": 1}).reproducible is None  # type: ignore[union-attr]


num_st = st.one_of(st.none(), st.just(0.0), st.just(-0.0), st.floats(0, 3),
                   st.sampled_from([0.45, 0.9, 1.5]))
flip_st = st.builds(Flip, num_st, num_st, num_st, st.one_of(st.none(), st.booleans()),
                    st.booleans(), st.one_of(st.none(), st.booleans()))


@settings(max_examples=300, deadline=None)
@given(st.lists(flip_st, max_size=60), st.one_of(st.none(), st.integers(0, 80)),
       st.booleans())
def test_run_verdict_over_the_flip_table_equals_the_per_flip_form(
        flips: list[Flip], no_match: int | None, widened: bool) -> None:
    # the index's flip table holds the flips flip_of kept (analysable or with a re-fire)
    kept = [f for f in flips if f.analysable or f.reproducible is not None]
    prior = widen(DEFAULT_PRIOR, 1.2, 0.6) if widened else DEFAULT_PRIOR
    t = flip_table(enumerate(kept))
    want = run_verdict(kept, prior, no_match=no_match)
    got = run_verdict_arrays(t.swing, t.drift, t.swing_min, t.in_topk, t.off_top1,
                             t.reproducible, prior, no_match=no_match)
    assert got.to_json() == want.to_json()
    assert repr(got.to_json()) == repr(want.to_json())  # -0.0 against 0.0 too
