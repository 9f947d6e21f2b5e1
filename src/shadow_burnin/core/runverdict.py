"""The run-level verdict: are a run's flips numeric noise, or did the distribution change?

Pure functions over the forensics that ``no-match`` rounds carry (``core.verdict``: the
swing at the first differing token, both margins, the prefix drift, top-K membership)
and their re-fire outcome. A single flip cannot be told apart from noise when its margins
moved no more than noise moves them; the *set* of flips can: under numeric noise only a
small share of flips falls outside the noise envelope, tokens stay in each other's
top-K, and each side's greedy pick is its own top-1.

The ``ppl`` run's KLD and same-top-1 rate, when one exists, are said beside the decision
(context only: no prior of benign pairs for them has been measured yet).

The noise model is a **prior** (:data:`DEFAULT_PRIOR`), never the pair's own figures — a
broken pair inflates its own swings and drifts, so it must not excuse itself. The prior
comes from the README's measured tables (Gemma 3 270M Q4_K_M, 2-core CPU) of benign pairs:
numeric-path variants of llama.cpp (threads, batch/ubatch, flash attention, KV q8_0):
swings 0.03–0.67 nats, prefix drifts up to 0.4; llama.cpp vs mistral.rs: swings
0.03–0.88, drifts up to 0.30, 1 of 38 flips with a token outside the other's top-5;
the llama.cpp upgrade pair: margins 0.01–0.40 on each side (swing ≤ 0.8), drifts
0.11–0.26. A broken pair (RoPE base wrong) reached swings of 2.3 and drifts of 0.65. So
the envelope is swing ≤ 0.9 and drift ≤ 0.45 nats, and a benign flip falls outside it
with probability at most 5 % (none of the ~100 measured benign flips did), a token
misses the other's top-K at most 3 % of the time, and a greedy pick below the side's own
top-1 (a sampler setting such as ``repeat_penalty``) at most 1 %. An A/A across numeric
paths (``--v1b``) can only widen the envelope (:func:`widen`).

Three tail tests (binomial, exact): flips outside the envelope, top-K misses, off-top-1
picks — each "k of n, noise predicts at most n·p ± √(n·p(1−p))". Any test beyond
``alpha`` (0.001 by default, three tests) → ``changed``; else ``noise``; no analysable
flip at all while there are unanalysed no-match rounds → ``unknown``. Re-fires that did
not reproduce are reported (a non-deterministic side) but are not evidence of a
distribution change.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import msgspec
import numpy as np
from msgspec.structs import replace

from shadow_burnin.core.gates import Figure
from shadow_burnin.core.tokstats import MARGIN_EDGES, MARGIN_FIELDS
from shadow_burnin.core.verdict import NOISE_SCALE, SAME_PATH_SCALE

Decision = Literal["noise", "changed", "unknown"]
OFF_TOP1 = "do not describe its greedy"  # core.verdict's reason for an off-top-1 pick


class NoisePrior(msgspec.Struct, frozen=True):
    """The numeric-noise envelope of one flip and how often benign flips break it."""

    swing: float = 0.9  # nats: a benign flip's swing stays at or below this …
    drift: float = 0.45  # … and its prefix drift at or below this
    outside_rate: float = 0.05  # share of benign flips allowed outside the envelope
    topk_miss_rate: float = 0.03  # share with a token missing from the other's top-K
    off_top1_rate: float = 0.01  # share where a side's pick is not its own top-1
    alpha: float = 0.001  # a tail probability below this is a change
    # matched tokens (core.tokstats): numeric noise moves a token's top-2 margin by a
    # Laplace amount of scale ``move_scale`` nats (its mean |move|); a flip at a token of
    # margin m has probability ½·exp(−m / move_scale) under noise
    move_scale: float = NOISE_SCALE
    # one kernel on other thread/batch paths moves margins at most this much on average:
    # a run above it (and within ``move_scale``) is said to be on another numeric path
    same_path_scale: float = SAME_PATH_SCALE
    off_top1_token_rate: float = 0.001  # per matched token, a pick that is not top-1
    min_tokens: int = 50  # matched tokens before the token-level tests count
    source: str = "default prior (README: benign numeric variants vs broken pairs)"

    def to_json(self) -> dict[str, Any]:
        return {"swing": self.swing, "drift": self.drift, "outside_rate": self.outside_rate,
                "topk_miss_rate": self.topk_miss_rate, "off_top1_rate": self.off_top1_rate,
                "alpha": self.alpha, "move_scale": self.move_scale,
                "same_path_scale": self.same_path_scale,
                "off_top1_token_rate": self.off_top1_token_rate,
                "min_tokens": self.min_tokens, "source": self.source}

    def hazard(self, margin: float) -> float:
        """P(a token of top-2 ``margin`` flips) under the noise: ½·exp(−margin/scale)."""
        return 0.5 * math.exp(-max(margin, 0.0) / self.move_scale)


DEFAULT_PRIOR = NoisePrior()


LN100 = math.log(100.0)  # a Laplace's p99 is its scale times ln 100


def widen(prior: NoisePrior, swing_p99: float | None, drift_p99: float | None) -> NoisePrior:
    """The prior widened (never narrowed) by an A/A across numeric paths: the envelope
    by the A/A's p99 swing and drift, the margin-move scale to a Laplace whose p99 is the
    A/A's p99 swing (which counts its margin moves)."""
    swing = max(prior.swing, swing_p99 or 0.0)
    drift = max(prior.drift, drift_p99 or 0.0)
    scale = max(prior.move_scale, (swing_p99 or 0.0) / LN100)
    if (swing, drift, scale) == (prior.swing, prior.drift, prior.move_scale):
        return prior
    return replace(prior, swing=swing, drift=drift, move_scale=scale,
                   source=prior.source + " widened by the A/A p99")


class Flip(msgspec.Struct, frozen=True):
    """What one no-match round's forensics say about its first differing token."""

    swing: float | None  # None when a token was outside the top-K (see swing_min)
    drift: float | None
    swing_min: float | None = None
    in_topk: bool | None = None  # both tokens in the other side's top-K
    off_top1: bool = False  # a side's greedy pick is not its own top-1
    reproducible: bool | None = None  # the re-fire repeated both answers

    @property
    def analysable(self) -> bool:
        return self.swing is not None or self.swing_min is not None or self.off_top1


def flip_of(fx: Mapping[str, Any] | None, refire: Any = None) -> Flip | None:
    """A :class:`Flip` from a round's ``forensics`` and ``refire`` fields (the latter a
    record ``{"outcome": …}`` or the outcome itself); None: nothing to judge."""
    if not isinstance(fx, Mapping):
        return None

    def num(key: str) -> float | None:
        v = fx.get(key)
        return float(v) if isinstance(v, int | float) and not isinstance(v, bool) \
            and math.isfinite(v) else None

    b_in, a_in = fx.get("b_in_v1_top"), fx.get("a_in_v2_top")
    in_topk = None if b_in is None or a_in is None else bool(b_in) and bool(a_in)
    reason = fx.get("reason")
    off = isinstance(reason, str) and OFF_TOP1 in reason
    outcome = refire.get("outcome") if isinstance(refire, Mapping) else refire
    rep = None if not isinstance(outcome, str) else outcome == "reproducible"
    flip = Flip(num("swing"), num("prefix_drift"), num("swing_min"), in_topk, off, rep)
    return flip if flip.analysable or rep is not None else None


def binom_tail(k: int, n: int, p: float) -> float:
    """P(X ≥ k) for X ~ Binomial(n, p), exact (log-space terms)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    lp, lq = math.log(p), math.log1p(-p)
    terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp
             + (n - i) * lq for i in range(k, n + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


class TokenEvidence(msgspec.Struct, frozen=True):
    """A run's token statistics summed over its rounds (``core.tokstats``)."""

    rounds: int = 0  # rounds with token statistics
    n: int = 0  # matched tokens
    dlp_sum: float = 0.0
    dlp_max: float = 0.0
    move_n: int = 0
    move_sum: float = 0.0
    move_sq: float = 0.0
    move_max: float = 0.0
    at_margin: tuple[int, ...] = ()  # matched tokens per margin bin (MARGIN_EDGES, ≥ last)
    topk_overlap: float = 0.0
    off_top1: int = 0
    flip_margins: tuple[float, ...] = ()  # v1's top-2 margin at each flip (known ones)
    flips: int = 0  # rounds whose streams differ at a token both sides generated

    @property
    def dlp_mean(self) -> float | None:
        return self.dlp_sum / self.n if self.n else None

    @property
    def move_mean(self) -> float | None:
        return self.move_sum / self.move_n if self.move_n else None

    def predicted(self, prior: NoisePrior) -> float:
        """Flips numeric noise predicts: Σ over tokens at risk (matched tokens and the
        flips' own tokens) of the hazard at their margin (a bin's lower edge: an upper
        bound)."""
        lows = (0.0, *MARGIN_EDGES)
        lam = sum(c * prior.hazard(lo) for c, lo in zip(self.at_margin, lows, strict=False))
        return lam + sum(prior.hazard(m) for m in self.flip_margins)


def token_evidence(stats: Mapping[str, np.ndarray]) -> TokenEvidence:
    """Sum a log's ``Columns.tokstats`` (NaN: a round without a figure)."""
    if not stats or "n" not in stats:
        return TokenEvidence()
    have = ~np.isnan(stats["n"])

    def total(name: str) -> float:
        col = stats[name][have].astype(np.float64)
        return float(np.nansum(col))

    def top(name: str) -> float:
        col = stats[name][have]
        return float(np.nanmax(col)) if col.size and not np.isnan(col).all() else 0.0

    cum = [total(f) for f in MARGIN_FIELDS]
    n = int(total("n"))
    bins = [cum[0], *(b - a for a, b in itertools.pairwise(cum)), n - cum[-1]]
    margins = stats["div_margin"][have]
    outside = stats["div_outside"][have]
    flipped = ~np.isnan(margins) | (outside == 1)
    return TokenEvidence(
        rounds=int(have.sum()), n=n, dlp_sum=total("dlp_sum"), dlp_max=top("dlp_max"),
        move_n=int(total("move_n")), move_sum=total("move_sum"), move_sq=total("move_sq"),
        move_max=top("move_max"), at_margin=tuple(round(b) for b in bins),
        topk_overlap=total("topk_overlap"), off_top1=int(total("off_top1")),
        flip_margins=tuple(float(m) for m in margins[~np.isnan(margins)]),
        flips=int(flipped.sum()))


def normal_sf(z: float) -> float:
    """P(Z ≥ z) for a standard normal."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def poisson_tail(k: int, lam: float) -> float:
    """P(X ≥ k) for X ~ Poisson(lam)."""
    if k <= 0:
        return 1.0
    if lam <= 0.0:
        return 0.0
    def term(i: int) -> float:
        return math.exp(i * math.log(lam) - lam - math.lgamma(i + 1))

    if k <= lam:
        return max(0.0, 1.0 - sum(term(i) for i in range(k)))
    upper = k + 50 + int(10 * math.sqrt(lam))  # the terms fall faster than geometric
    return min(1.0, sum(term(i) for i in range(k, upper)))


class Test(msgspec.Struct, frozen=True):
    """One tail test: ``observed`` of ``n`` (flips or tokens) against noise's ``rate``;
    a test of a mean or a count (``mean``/``sd`` given) has that as its expectation."""

    name: str
    observed: float
    n: int
    rate: float
    p_value: float
    mean: float | None = None  # noise's expectation, when not n·rate
    sd: float | None = None

    @property
    def expected(self) -> float:
        return self.n * self.rate if self.mean is None else self.mean

    @property
    def spread(self) -> float:
        if self.sd is not None:
            return self.sd
        return math.sqrt(self.n * self.rate * (1 - self.rate))

    def to_json(self) -> dict[str, Any]:
        observed = self.observed if self.observed != int(self.observed) \
            else int(self.observed)
        return {"name": self.name, "observed": observed, "n": self.n,
                "expected": round(self.expected, 3), "spread": round(self.spread, 3),
                "p_value": float(f"{self.p_value:.3g}")}


def _test(name: str, observed: int, n: int, rate: float) -> Test:
    return Test(name, observed, n, rate, binom_tail(observed, n, rate))


OFF_TOP1_FLIPS = "greedy pick not the side's own top-1"
MOVES_TEST = "mean margin move at matched tokens"
FLIPS_TEST = "flips against the matched-token noise"
OFF_TOP1_TOKENS = "matched tokens whose greedy pick is not the side's own top-1"


def token_tests(ev: TokenEvidence, prior: NoisePrior) -> tuple[Test, ...]:
    """The token-level tests, once the run has ``prior.min_tokens`` matched tokens:

    - the mean margin move against the prior's scale (one-sided z test of the mean:
      a broken model moves margins further than numeric noise does);
    - the flips against the number the noise predicts from the margins of the tokens at
      risk (Poisson tail: noise flips only near-ties, a change flips wider margins);
    - greedy picks that are not the side's own top-1 (binomial per token).
    """
    if ev.n < prior.min_tokens:
        return ()
    tests = []
    mean = ev.move_mean
    if mean is not None and ev.move_n >= 2:
        var = max(ev.move_sq / ev.move_n - mean * mean, 0.0) * ev.move_n / (ev.move_n - 1)
        se = max(math.sqrt(var / ev.move_n), 1e-9)
        tests.append(Test(MOVES_TEST, round(mean, 5), ev.move_n, 0.0,
                          normal_sf((mean - prior.move_scale) / se), prior.move_scale, se))
    lam = ev.predicted(prior)
    tests.append(Test(FLIPS_TEST, ev.flips, ev.n + ev.flips, 0.0,
                      poisson_tail(ev.flips, lam), lam, math.sqrt(lam)))
    tests.append(_test(OFF_TOP1_TOKENS, ev.off_top1, ev.n + ev.flips,
                       prior.off_top1_token_rate))
    return tuple(tests)

class RunVerdict(msgspec.Struct, frozen=True):
    """The decision, the figures behind it and one plain-language explanation."""

    decision: Decision
    explanation: str
    flips: int  # analysable flips
    tests: tuple[Test, ...] = ()
    swing_max: float | None = None
    swing_median: float | None = None
    drift_max: float | None = None
    not_reproducible: int = 0
    unanalysed: int = 0
    prior: NoisePrior = msgspec.field(default_factory=NoisePrior)
    tokens: TokenEvidence = msgspec.field(default_factory=TokenEvidence)
    ppl: dict[str, Any] | None = None  # the latest ppl run's paired figures (context)

    def to_json(self) -> dict[str, Any]:
        def r(x: float | None) -> float | None:
            return None if x is None else round(x, 4)

        ev = self.tokens
        return {"decision": self.decision, "explanation": self.explanation,
                "flips": self.flips, "tests": [t.to_json() for t in self.tests],
                "swing_max": r(self.swing_max), "swing_median": r(self.swing_median),
                "drift_max": r(self.drift_max), "not_reproducible": self.not_reproducible,
                "unanalysed": self.unanalysed, "prior": self.prior.to_json(),
                "tokens": {"rounds": ev.rounds, "matched": ev.n, "flips": ev.flips,
                           "dlp_mean": r(ev.dlp_mean), "dlp_max": r(ev.dlp_max),
                           "move_mean": r(ev.move_mean), "move_max": r(ev.move_max),
                           "predicted_flips": r(ev.predicted(self.prior)) if ev.n else None,
                           "flip_margin_max": r(max(ev.flip_margins, default=0.0))
                           if ev.flip_margins else None,
                           "topk_overlap": r(ev.topk_overlap / ev.n) if ev.n else None,
                           "off_top1": ev.off_top1},
                "numeric_path": self.numeric_path(),
                "ppl": self.ppl}

    def numeric_path(self) -> str | None:
        """``same`` (margins moved like one kernel's thread/batch noise), ``other``
        (like another kernel or engine, see :func:`other_path`), ``beyond`` (more than
        the prior); None before the token-level tests run."""
        moves = next((t for t in self.tests if t.name == MOVES_TEST), None)
        if moves is None:
            return None
        if moves.p_value < self.prior.alpha:
            return "beyond"
        return "other" if other_path(moves, self.prior) else "same"


def outside(flip: Flip, prior: NoisePrior) -> bool:
    """True when the flip's margins moved more than numeric noise moves them."""
    swing = flip.swing if flip.swing is not None else flip.swing_min
    return (swing is not None and swing > prior.swing) or \
        (flip.drift is not None and flip.drift > prior.drift)


def run_verdict(flips: Iterable[Flip | None], prior: NoisePrior = DEFAULT_PRIOR, *,
                no_match: int | None = None, tokens: TokenEvidence | None = None,
                ppl: Mapping[str, Any] | None = None) -> RunVerdict:
    """Decide noise vs changed from a run's flips (``no_match``: the run's no-match
    rounds, to count those without forensics) and its token statistics (``tokens``,
    summed by :func:`token_evidence`; the token-level tests need
    ``prior.min_tokens`` matched tokens)."""
    items = [f for f in flips if f is not None]
    judged = [f for f in items if f.analysable]
    n = len(judged)
    swings = sorted(f.swing for f in judged if f.swing is not None)
    drifts = [f.drift for f in judged if f.drift is not None]
    with_topk = [f for f in judged if f.in_topk is not None]
    return _decide(
        n, max(0, (no_match if no_match is not None else len(items)) - n),
        sum(1 for f in items if f.reproducible is False),
        sum(outside(f, prior) for f in judged),
        sum(1 for f in with_topk if not f.in_topk), len(with_topk),
        sum(f.off_top1 for f in judged),
        {"swing_max": swings[-1] if swings else None, "swing_median": _median(swings),
         "drift_max": max(drifts) if drifts else None}, prior, tokens, ppl)


def run_verdict_arrays(swing: np.ndarray, drift: np.ndarray, swing_min: np.ndarray,
                       in_topk: np.ndarray, off_top1: np.ndarray, reproducible: np.ndarray,
                       prior: NoisePrior = DEFAULT_PRIOR, *, no_match: int | None = None,
                       tokens: TokenEvidence | None = None,
                       ppl: Mapping[str, Any] | None = None) -> RunVerdict:
    """:func:`run_verdict` over the flips as columns (the round index's flip table: NaN
    for a missing number, -1/0/1 for a missing/false/true flag, ``off_top1`` 0/1): the
    same counts, figures and decision, without one object per flip."""
    swing_nan, drift_nan = np.isnan(swing), np.isnan(drift)
    judged = ~swing_nan | ~np.isnan(swing_min) | (off_top1 > 0)
    n = int(np.count_nonzero(judged))
    js = swing[judged & ~swing_nan]
    jd = drift[judged & ~drift_nan]
    # a flip's swing, else its lower bound; NaN compares false, as None counts as inside
    eff = np.where(swing_nan, swing_min, swing)
    with np.errstate(invalid="ignore"):
        out_n = int(np.count_nonzero(judged & ((eff > prior.swing) | (drift > prior.drift))))
    topk = judged & (in_topk >= 0)
    js = np.sort(js, kind="stable")  # ties (0.0, -0.0) in flip order, as sorted() leaves them
    return _decide(
        n, max(0, (no_match if no_match is not None else int(swing.size)) - n),
        int(np.count_nonzero(reproducible == 0)), out_n,
        int(np.count_nonzero(topk & (in_topk == 0))), int(np.count_nonzero(topk)),
        int(np.count_nonzero(judged & (off_top1 > 0))),
        {"swing_max": float(js[-1]) if js.size else None,
         "swing_median": _median([float(x) for x in js[(js.size - 1) // 2:js.size // 2 + 1]])
         if js.size else None,
         # the first greatest, as max() picks it
         "drift_max": float(jd[int(np.argmax(jd))]) if jd.size else None}, prior, tokens, ppl)


def _decide(n: int, unanalysed: int, not_rep: int, outside_n: int, topk_miss: int,
            topk_n: int, off_top1_n: int, figs: dict[str, Any], prior: NoisePrior,
            tokens: TokenEvidence | None, ppl: Mapping[str, Any] | None) -> RunVerdict:
    """The tests, decision and explanation from a run's flip counts (``n`` analysable
    flips) and its token statistics."""
    ev = tokens or TokenEvidence()
    tests = (
        _test("outside the noise envelope", outside_n, n, prior.outside_rate),
        _test("token missing from the other's top-K", topk_miss, topk_n,
              prior.topk_miss_rate),
        _test(OFF_TOP1_FLIPS, off_top1_n, n, prior.off_top1_rate),
        *token_tests(ev, prior),
    )
    failed = [t for t in tests if t.n and t.p_value < prior.alpha]
    if failed:
        decision: Decision = "changed"
    elif n == 0 and unanalysed > 0 and ev.n < prior.min_tokens:
        decision = "unknown"
    else:
        decision = "noise"
    text = explain(decision, n, tests, figs, prior, not_rep, unanalysed, ev)
    context = ppl_context(ppl)
    if context is not None:
        text += (f" (ppl run over {context['positions']} positions: mean KLD "
                 f"{context['kld_mean']:.3g}, same top-1 {100 * context['same_top1_rate']:.1f} %"
                 "; context, not part of the decision: no benign prior for it yet)")
    return RunVerdict(decision, text, n, tests, figs["swing_max"], figs["swing_median"],
                      figs["drift_max"], not_rep, unanalysed, prior, ev, context)


def ppl_context(paired: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The ``ppl`` run's paired KLD and same-top-1 rate, when it has both."""
    if not isinstance(paired, Mapping):
        return None
    kld, same = paired.get("kld_mean"), paired.get("same_top1_rate")
    if not all(isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
               for x in (kld, same)):
        return None
    return {"kld_mean": kld, "same_top1_rate": same,
            "positions": int(paired.get("positions") or 0)}


def _median(xs: Sequence[float]) -> float | None:
    if not xs:
        return None
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


def explain(decision: Decision, n: int, tests: Sequence[Test], figs: Mapping[str, Any],
            prior: NoisePrior, not_rep: int, unanalysed: int,
            ev: TokenEvidence | None = None) -> str:
    """One paragraph a person can check against the figures."""
    token_part = _explain_tokens(tests, prior, ev) if ev is not None else ""
    if token_part:
        verdict = {"noise": "consistent with numeric noise",
                   "changed": "the distribution changed", "unknown": "cannot tell"}[decision]
        flip_tests = [t for t in tests if t.name not in _TOKEN_TESTS]
        text = token_part
        failed = [t for t in flip_tests if t.n and t.p_value < prior.alpha]
        if any(t.name == OFF_TOP1_TOKENS and t.p_value < prior.alpha for t in tests):
            failed = [t for t in failed if t.name != OFF_TOP1_FLIPS]  # said once
        if failed:
            text += "; " + "; ".join(_clause(t, prior) for t in failed)
        text += f" → {verdict}"
        if not_rep:
            text += f" ({not_rep} re-fires did not reproduce: a side is not deterministic)"
        if unanalysed:
            text += f" ({unanalysed} no-match rounds without logprobs not judged)"
        return text
    if n == 0:
        head = ("no flip with logprobs to judge" if unanalysed else
                "no flips: every parity round matched byte for byte")
        tail = {"unknown": f"{unanalysed} no-match rounds without forensics (run with "
                           "--logprobs) → cannot tell", "noise": "nothing to explain",
                "changed": ""}[decision]
        return f"{head}; {tail}" if tail else head
    parts = [f"{n} flips"]
    if figs.get("swing_max") is not None:
        parts.append(f"swings up to {figs['swing_max']:.2f} nats (median "
                     f"{figs['swing_median']:.2f})")
    if figs.get("drift_max") is not None:
        parts.append(f"prefix drift up to {figs['drift_max']:.2f}")
    clauses = [_clause(t, prior) for t in tests if t.n]
    verdict = {"noise": "consistent with numeric noise",
               "changed": "the distribution changed", "unknown": "cannot tell"}[decision]
    text = ", ".join(parts) + "; " + "; ".join(clauses) + f" → {verdict}"
    if not_rep:
        text += f" ({not_rep} re-fires did not reproduce: a side is not deterministic)"
    if unanalysed:
        text += f" ({unanalysed} no-match rounds without logprobs not judged)"
    return text


_TOKEN_TESTS = (MOVES_TEST, FLIPS_TEST, OFF_TOP1_TOKENS)


def _clause(t: Test, prior: NoisePrior) -> str:
    what = f"{t.observed:g} {t.name}"
    if t.name.startswith("outside"):
        what += f" (swing > {prior.swing:g} or drift > {prior.drift:g} nats)"
    return (f"{what}; noise predicts ≤ {t.expected:.1f} ± {t.spread:.1f}"
            + (f" (p = {t.p_value:.2g})" if t.p_value < prior.alpha else ""))


def other_path(moves: Test, prior: NoisePrior) -> bool:
    """The mean margin move is beyond one kernel's thread/batch noise
    (``prior.same_path_scale``, one-sided at ``alpha``) but not beyond the prior: the
    numbers moved like another kernel's or engine's."""
    if moves.sd is None or prior.same_path_scale >= prior.move_scale:
        return False
    z = (moves.observed - prior.same_path_scale) / max(moves.sd, 1e-9)
    return normal_sf(z) < prior.alpha and moves.p_value >= prior.alpha


def _explain_tokens(tests: Sequence[Test], prior: NoisePrior, ev: TokenEvidence) -> str:
    """The token-level sentence: flips against the noise's prediction, the margin moves,
    off-top-1 picks; empty when the token-level tests did not run."""
    by = {t.name: t for t in tests}
    flips = by.get(FLIPS_TEST)
    if flips is None:
        return ""
    parts = []
    if ev.flip_margins:
        parts.append(f"{ev.flips} flips, at margins up to {max(ev.flip_margins):.2f} nats")
    else:
        parts.append(f"{ev.flips} flips")

    def mark(t: Test) -> str:
        return f" (p = {t.p_value:.2g})" if t.p_value < prior.alpha else ""

    parts.append(f"the noise of {ev.n} matched tokens predicts {flips.expected:.1f} ± "
                 f"{flips.spread:.1f}{mark(flips)}")
    moves = by.get(MOVES_TEST)
    if moves is not None:
        parts.append(f"mean margin move {moves.observed:.3f} nats (noise ≤ "
                     f"{prior.move_scale:g}){mark(moves)}")
        if other_path(moves, prior):
            parts.append(f"above one kernel's thread/batch noise (≤ {prior.same_path_scale:g}):"
                         " another kernel or engine — or a change as small as one (a RoPE "
                         "base off by up to 2× looks the same at short contexts)")
    if ev.dlp_mean is not None:
        parts.append(f"mean |Δlp| {ev.dlp_mean:.3f}")
    off = by.get(OFF_TOP1_TOKENS)
    if off is not None and off.observed:
        parts.append(f"{off.observed:g} greedy picks not the side's own top-1 (a sampler "
                     f"setting?){mark(off)}")
    return "; ".join(parts)


RUN_METRICS = ("run_changed", "run_off_path")


def run_figures(rv: Mapping[str, Any] | None) -> dict[str, Figure]:
    """The gate figures from a verdict's JSON: ``run_changed`` 1 changed, 0 noise;
    ``run_off_path`` 1 when the margins moved beyond one kernel's thread/batch noise
    (``numeric_path`` other or beyond), 0 same; no value (the gate waits) when the run
    cannot be judged (or, for the path, before the token-level tests run)."""
    if not rv:
        return {name: Figure(None) for name in RUN_METRICS}
    value = {"changed": 1.0, "noise": 0.0}.get(str(rv.get("decision")))
    path = {"same": 0.0, "other": 1.0, "beyond": 1.0}.get(str(rv.get("numeric_path")))
    n = int(rv.get("flips") or 0)
    note = str(rv.get("explanation") or "")
    return {"run_changed": Figure(value, n, note=note),
            "run_off_path": Figure(path, int((rv.get("tokens") or {}).get("matched") or 0),
                                   note=note)}
