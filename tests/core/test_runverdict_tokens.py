"""The token-level run verdict on synthetic logprobs where the right answer is known.

A generator draws, per round, a short greedy stream: at each position five candidate
tokens with v1 logits, and v2's logits = v1's + per-logit noise. Numeric noise (the
benign case) is small Laplace noise; a changed distribution adds much larger noise (a
wrong RoPE base moves margins by tenths of a nat), or a repeat penalty lowers the logit
of a token already generated on one side only.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shadow_burnin.core.columns import tokstats_columns
from shadow_burnin.core.runverdict import (
    DEFAULT_PRIOR,
    FLIPS_TEST,
    MOVES_TEST,
    TokenEvidence,
    poisson_tail,
    run_verdict,
    token_evidence,
    widen,
)
from shadow_burnin.core.tokstats import summarise, to_json
from shadow_burnin.core.verdict import Alt, Token

VOCAB = 5


def _tokens(logits: np.ndarray, names: list[str], chosen: int) -> Token:
    lp = logits - np.log(np.exp(logits - logits.max()).sum()) - logits.max()
    order = np.argsort(-lp)
    top = tuple(Alt(names[i], float(lp[i])) for i in order)
    return Token(names[chosen], float(lp[chosen]), None, top)


def pair(rng: np.random.Generator, noise: float, length: int = 16, penalty: float = 0.0
         ) -> tuple[list[Token], list[Token]]:
    """One round's two streams: greedy over noisy logits (``penalty``: v2 lowers the
    logit of tokens it already generated, but reports the unpenalised logprobs)."""
    t1: list[Token] = []
    t2: list[Token] = []
    seen: set[str] = set()
    diverged = False
    for pos in range(length):
        names = [f"w{pos}_{j}" for j in range(VOCAB - 1)] + ["the"]
        l1 = rng.normal(0, 2.0, VOCAB)
        l2 = l1 + rng.laplace(0, noise, VOCAB) if noise else l1.copy()
        pick = l2.copy()
        if penalty:
            pick[[i for i, n in enumerate(names) if n in seen]] -= penalty
        a, b = int(np.argmax(l1)), int(np.argmax(pick))
        t1.append(_tokens(l1, names, a))
        t2.append(_tokens(l2, names, b))
        seen.add(names[b])
        if a != b or diverged:
            break
    return t1, t2


def evidence(rng: np.random.Generator, rounds: int, noise: float, penalty: float = 0.0
             ) -> TokenEvidence:
    rows = {}
    for i in range(rounds):
        s = summarise(*pair(rng, noise, penalty=penalty))
        assert s is not None
        rows[i] = to_json(s)
    return token_evidence(tokstats_columns(rows, rounds))


NOISE = 0.045  # per-logit Laplace scale: mean margin move ≈ 0.07 (a measured benign pair)
BROKEN = 0.25  # a changed distribution: margins move by ~0.4 nats


def test_noise_only_runs_are_called_noise() -> None:
    changed = sum(run_verdict([], tokens=evidence(np.random.default_rng(seed), 60, NOISE))
                  .decision == "changed" for seed in range(40))
    assert changed <= 1


def test_shifted_runs_are_called_changed() -> None:
    for seed in range(10):
        v = run_verdict([], tokens=evidence(np.random.default_rng(seed), 40, BROKEN))
        assert v.decision == "changed", v.explanation
        failed = {t.name for t in v.tests if t.p_value < DEFAULT_PRIOR.alpha}
        assert MOVES_TEST in failed


def test_a_repeat_penalty_on_one_side_is_caught_on_exact_rounds_too() -> None:
    rng = np.random.default_rng(3)
    v = run_verdict([], tokens=evidence(rng, 40, 0.0, penalty=3.0))
    assert v.decision == "changed"
    assert v.explanation.count("not the side's own top-1") == 1


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_the_noise_prediction_is_close_to_the_flips_under_noise(seed: int) -> None:
    """Under the prior's own noise the predicted flips bound the observed ones."""
    ev = evidence(np.random.default_rng(seed), 80, NOISE)
    lam = ev.predicted(DEFAULT_PRIOR)
    assert poisson_tail(ev.flips, lam) > DEFAULT_PRIOR.alpha


def test_the_explanation_names_flips_prediction_and_moves() -> None:
    v = run_verdict([], tokens=evidence(np.random.default_rng(1), 60, BROKEN))
    text = v.explanation
    assert "flips" in text and "matched tokens predicts" in text
    assert "mean margin move" in text and text.endswith("→ the distribution changed")
    body = v.to_json()
    assert body["tokens"]["matched"] == v.tokens.n > 0
    assert {t["name"] for t in body["tests"]} >= {FLIPS_TEST, MOVES_TEST}


def test_too_few_matched_tokens_run_no_token_test() -> None:
    v = run_verdict([], tokens=evidence(np.random.default_rng(2), 2, BROKEN))
    assert v.tokens.n < DEFAULT_PRIOR.min_tokens
    assert not any(t.name == FLIPS_TEST for t in v.tests)


def test_poisson_tail() -> None:
    assert poisson_tail(0, 3.0) == 1.0
    assert poisson_tail(1, 3.0) == pytest.approx(1 - math.exp(-3))
    want = 1 - sum(math.exp(-2.0) * 2.0 ** i / math.factorial(i) for i in range(9))
    assert poisson_tail(9, 2.0) == pytest.approx(want, rel=1e-9)
    assert poisson_tail(3, 0.0) == 0.0


def test_token_evidence_of_no_columns() -> None:
    assert token_evidence({}) == TokenEvidence()


def test_another_kernel_is_noise_on_another_numeric_path() -> None:
    """A pair on another attention kernel moves margins ~0.15 nats (measured: flash
    attention on, mistral.rs): noise against the default prior (0.2, the benign pairs'
    largest plus headroom), and said to be beyond one kernel's thread/batch noise."""
    ev = evidence(np.random.default_rng(5), 60, 0.1)
    assert ev.move_mean is not None and 0.12 < ev.move_mean < 0.2
    v = run_verdict([], tokens=ev)
    assert v.decision == "noise", v.explanation
    assert v.numeric_path() == "other"
    assert v.to_json()["numeric_path"] == "other"
    assert "another kernel or engine" in v.explanation
    same = run_verdict([], tokens=evidence(np.random.default_rng(5), 60, NOISE))
    assert same.numeric_path() == "same"
    assert "another kernel" not in same.explanation
    broken = run_verdict([], tokens=evidence(np.random.default_rng(5), 60, BROKEN))
    assert broken.decision == "changed" and broken.numeric_path() == "beyond"


def test_an_a_a_across_the_numeric_path_widens_the_noise_model() -> None:
    """An A/A on v2's numeric path (``--v1b``) whose p99 swing is 2 nats widens the scale
    to 2 / ln 100 ≈ 0.43: a pair moving margins ~0.3 nats is then noise."""
    ev = evidence(np.random.default_rng(5), 60, 0.2)
    assert ev.move_mean is not None and 0.25 < ev.move_mean < 0.4
    assert run_verdict([], tokens=ev).decision == "changed"
    wide = widen(DEFAULT_PRIOR, 2.0, 0.3)
    assert wide.move_scale == pytest.approx(2.0 / math.log(100))
    assert run_verdict([], wide, tokens=ev).decision == "noise"
    assert widen(DEFAULT_PRIOR, 0.3, 0.1) is DEFAULT_PRIOR  # a narrower A/A: no change


def test_a_ppl_run_is_said_beside_the_decision() -> None:
    ev = evidence(np.random.default_rng(1), 30, NOISE)
    paired = {"kld_mean": 0.0123, "same_top1_rate": 0.975, "positions": 1024}
    v = run_verdict([], tokens=ev, ppl=paired)
    assert "mean KLD 0.0123, same top-1 97.5 %" in v.explanation
    assert v.to_json()["ppl"] == paired
    assert run_verdict([], tokens=ev, ppl={"kld_mean": None}).ppl is None
    assert v.decision == run_verdict([], tokens=ev).decision  # context only
