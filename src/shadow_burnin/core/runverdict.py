"""The run-level verdict: are a run's flips numeric noise, or did the distribution change?

Pure functions over the forensics that ``no-match`` rounds carry (``core.verdict``: the
swing at the first differing token, both margins, the prefix drift, top-K membership)
and their re-fire outcome. A single flip cannot be told apart from noise when its margins
moved no more than noise moves them; the *set* of flips can: under numeric noise only a
small share of flips falls outside the noise envelope, tokens stay in each other's
top-K, and each side's greedy pick is its own top-1.

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

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from shadow_burnin.core.gates import Figure

Decision = Literal["noise", "changed", "unknown"]
OFF_TOP1 = "do not describe its greedy"  # core.verdict's reason for an off-top-1 pick


@dataclass(frozen=True, slots=True)
class NoisePrior:
    """The numeric-noise envelope of one flip and how often benign flips break it."""

    swing: float = 0.9  # nats: a benign flip's swing stays at or below this …
    drift: float = 0.45  # … and its prefix drift at or below this
    outside_rate: float = 0.05  # share of benign flips allowed outside the envelope
    topk_miss_rate: float = 0.03  # share with a token missing from the other's top-K
    off_top1_rate: float = 0.01  # share where a side's pick is not its own top-1
    alpha: float = 0.001  # a tail probability below this is a change
    source: str = "default prior (README: benign numeric variants vs broken pairs)"

    def to_json(self) -> dict[str, Any]:
        return {"swing": self.swing, "drift": self.drift, "outside_rate": self.outside_rate,
                "topk_miss_rate": self.topk_miss_rate, "off_top1_rate": self.off_top1_rate,
                "alpha": self.alpha, "source": self.source}


DEFAULT_PRIOR = NoisePrior()


def widen(prior: NoisePrior, swing_p99: float | None, drift_p99: float | None) -> NoisePrior:
    """The prior widened (never narrowed) by an A/A across numeric paths."""
    swing = max(prior.swing, swing_p99 or 0.0)
    drift = max(prior.drift, drift_p99 or 0.0)
    if (swing, drift) == (prior.swing, prior.drift):
        return prior
    return replace(prior, swing=swing, drift=drift,
                   source=prior.source + " widened by the A/A p99")


@dataclass(frozen=True, slots=True)
class Flip:
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


@dataclass(frozen=True, slots=True)
class Test:
    """One tail test: ``observed`` of ``n`` flips against noise's ``rate``."""

    name: str
    observed: int
    n: int
    rate: float
    p_value: float

    @property
    def expected(self) -> float:
        return self.n * self.rate

    @property
    def spread(self) -> float:
        return math.sqrt(self.n * self.rate * (1 - self.rate))

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "observed": self.observed, "n": self.n,
                "expected": round(self.expected, 3), "spread": round(self.spread, 3),
                "p_value": float(f"{self.p_value:.3g}")}


def _test(name: str, observed: int, n: int, rate: float) -> Test:
    return Test(name, observed, n, rate, binom_tail(observed, n, rate))


@dataclass(frozen=True, slots=True)
class RunVerdict:
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
    prior: NoisePrior = field(default_factory=NoisePrior)

    def to_json(self) -> dict[str, Any]:
        def r(x: float | None) -> float | None:
            return None if x is None else round(x, 4)

        return {"decision": self.decision, "explanation": self.explanation,
                "flips": self.flips, "tests": [t.to_json() for t in self.tests],
                "swing_max": r(self.swing_max), "swing_median": r(self.swing_median),
                "drift_max": r(self.drift_max), "not_reproducible": self.not_reproducible,
                "unanalysed": self.unanalysed, "prior": self.prior.to_json()}


def outside(flip: Flip, prior: NoisePrior) -> bool:
    """True when the flip's margins moved more than numeric noise moves them."""
    swing = flip.swing if flip.swing is not None else flip.swing_min
    return (swing is not None and swing > prior.swing) or \
        (flip.drift is not None and flip.drift > prior.drift)


def run_verdict(flips: Iterable[Flip | None], prior: NoisePrior = DEFAULT_PRIOR, *,
                no_match: int | None = None) -> RunVerdict:
    """Decide noise vs changed from a run's flips (``no_match``: the run's no-match
    rounds, to count those without forensics)."""
    items = [f for f in flips if f is not None]
    judged = [f for f in items if f.analysable]
    n = len(judged)
    unanalysed = max(0, (no_match if no_match is not None else len(items)) - n)
    not_rep = sum(1 for f in items if f.reproducible is False)
    swings = sorted(f.swing for f in judged if f.swing is not None)
    drifts = [f.drift for f in judged if f.drift is not None]
    with_topk = [f for f in judged if f.in_topk is not None]
    tests = (
        _test("outside the noise envelope", sum(outside(f, prior) for f in judged), n,
              prior.outside_rate),
        _test("token missing from the other's top-K",
              sum(1 for f in with_topk if not f.in_topk), len(with_topk), prior.topk_miss_rate),
        _test("greedy pick not the side's own top-1", sum(f.off_top1 for f in judged), n,
              prior.off_top1_rate),
    )
    figs = {"swing_max": swings[-1] if swings else None,
            "swing_median": _median(swings), "drift_max": max(drifts) if drifts else None}
    failed = [t for t in tests if t.n and t.p_value < prior.alpha]
    if failed:
        decision: Decision = "changed"
    elif n == 0 and unanalysed > 0:
        decision = "unknown"
    else:
        decision = "noise"
    text = explain(decision, n, tests, figs, prior, not_rep, unanalysed)
    return RunVerdict(decision, text, n, tests, figs["swing_max"], figs["swing_median"],
                      figs["drift_max"], not_rep, unanalysed, prior)


def _median(xs: Sequence[float]) -> float | None:
    if not xs:
        return None
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


def explain(decision: Decision, n: int, tests: Sequence[Test], figs: Mapping[str, Any],
            prior: NoisePrior, not_rep: int, unanalysed: int) -> str:
    """One paragraph a person can check against the figures."""
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
    clauses = []
    for t in tests:
        if not t.n:
            continue
        what = f"{t.observed} {t.name}"
        if t.name.startswith("outside"):
            what += f" (swing > {prior.swing:g} or drift > {prior.drift:g} nats)"
        clauses.append(f"{what}; noise predicts ≤ {t.expected:.1f} ± {t.spread:.1f}"
                       + (f" (p = {t.p_value:.2g})" if t.p_value < prior.alpha else ""))
    verdict = {"noise": "consistent with numeric noise",
               "changed": "the distribution changed", "unknown": "cannot tell"}[decision]
    text = ", ".join(parts) + "; " + "; ".join(clauses) + f" → {verdict}"
    if not_rep:
        text += f" ({not_rep} re-fires did not reproduce: a side is not deterministic)"
    if unanalysed:
        text += f" ({unanalysed} no-match rounds without logprobs not judged)"
    return text


def run_figures(rv: Mapping[str, Any] | None) -> dict[str, Figure]:
    """The ``run_changed`` gate figure from a verdict's JSON: 1 changed, 0 noise, no value
    (the gate waits) when the run cannot be judged."""
    if not rv:
        return {"run_changed": Figure(None)}
    value = {"changed": 1.0, "noise": 0.0}.get(str(rv.get("decision")))
    return {"run_changed": Figure(value, int(rv.get("flips") or 0),
                                  note=str(rv.get("explanation") or ""))}
