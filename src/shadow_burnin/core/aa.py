"""The A/A noise floor: how often v1 disagrees with itself, beside how often v1 and v2 do.

An A/A record (``"kind": "aa"``) is one prompt sent twice to v1 (or to v1 and a second
copy ``v1b``). Figures:

- ``aa_exact_rate`` = exact / A/A records where both requests got a reply (Wilson 95 %);
- ``ab_minus_aa`` = A/B exact rate − A/A exact rate, with Newcombe's hybrid-score 95 %
  interval for a difference of two independent proportions (built from the two Wilson
  intervals; good coverage for rates near 0 or 1 and small samples). An interval that
  holds 0 means the A/B disagreements are within v1's own noise. Below
  ``MIN_AA_PAIRS`` (30) A/A pairs where both requests got a reply the comparison is not
  judged: the verdict is "too few A/A pairs to judge" (with 1–3 pairs the interval
  spans most of [−1, 1] and any verdict would be noise);
- ``swing_p99``: the 99th percentile of the A/A swing, which ``--calibrate`` uses as the
  near-tie threshold: τ_tie = max(default, p99); ``drift_p99`` likewise for τ_drift. Each
  only once there are ``MIN_SAMPLES`` (100) samples: a p99 of fewer is their maximum.

The A/A swing has two sources. An A/A pair that flips has a swing like any no-match
round. But two copies of one server flip rarely (a second copy on the *same* numeric path
never does: llama-server repeats itself bit for bit), so every A/A pair with logprobs on
both sides also gives ``noise`` samples at each of its matched tokens (``aa_noise``):

- ``moves``: how far the margin between the chosen token and its runner-up (the best
  other token of the first copy's top-K, when the second copy lists it too) moved from
  one copy to the other, |m_a − m_b| — the swing a flip at that token would have had;
- ``drifts``: |lp_a − lp_b| of the chosen token — what ``prefix_drift`` takes the
  maximum of in an A/B round.

Measured (Gemma 3 270M Q4_K_M, llama-server, 40 prompts, v1b at batch 8): 527 matched
tokens gave a p99 move of 0.37 nats, beside 9 flips whose swings were 0.03–0.36.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec
import numpy as np
from msgspec.structs import replace

from shadow_burnin.core.records import RecordKind, record_kind
from shadow_burnin.core.stats import wilson
from shadow_burnin.core.verdict import Thresholds, Token, first_divergence, same_token


def newcombe_diff(x1: int, n1: int, x2: int, n2: int
                  ) -> tuple[float, tuple[float, float]] | None:
    """p1 − p2 and its 95 % interval (Newcombe 1998, method 10); None if n1 or n2 is 0."""
    w1, w2 = wilson(x1, n1), wilson(x2, n2)
    if w1 is None or w2 is None:
        return None
    p1, p2 = x1 / n1, x2 / n2
    d = p1 - p2
    lo = d - math.sqrt((p1 - w1[0]) ** 2 + (w2[1] - p2) ** 2)
    hi = d + math.sqrt((w1[1] - p1) ** 2 + (p2 - w2[0]) ** 2)
    return round(d, 9), (round(max(-1.0, lo), 9), round(min(1.0, hi), 9))


MIN_SAMPLES = 100  # below this a "p99" is the sample maximum: the defaults stay
MIN_AA_PAIRS = 30  # below this many A/A pairs (both replied) A/B − A/A is not judged
TOO_FEW = "too few A/A pairs to judge"


def aa_verdict(pairs: int, interval: tuple[float, float] | None) -> str | None:
    """What A/B − A/A says: within / beyond v1's own noise, A/B agrees more, or too few
    A/A pairs to judge (fewer than ``MIN_AA_PAIRS``); None without A/B rounds."""
    if pairs < MIN_AA_PAIRS:
        return f"{TOO_FEW} ({pairs} < {MIN_AA_PAIRS})"
    if interval is None:
        return None
    lo, hi = interval
    if lo <= 0 <= hi:
        return "within v1's own noise"
    return "beyond v1's own noise" if hi < 0 else "A/B agrees more than A/A"


def calibrated_tau_tie(default: float, swings: Iterable[float],
                       min_samples: int = MIN_SAMPLES) -> float:
    """max(default, p99 of the finite A/A swings); the default while there are fewer than
    ``min_samples`` of them (a p99 of 16 values is their maximum: measured, one A/A pair
    of 16 tokens set τ_tie to 0.82 nats where 400 samples later gave 0.36)."""
    values = np.array([s for s in swings if s is not None and math.isfinite(s)],
                      dtype=np.float64)
    if values.size == 0 or values.size < min_samples:
        return default
    return max(default, float(np.percentile(values, 99)))


def aa_noise(ta: Sequence[Token], tb: Sequence[Token], digits: int = 4
             ) -> dict[str, list[float]]:
    """The noise samples of one A/A pair over its matched tokens (those before the first
    differing token): ``moves`` (runner-up margin moves) and ``drifts`` (|lp_a − lp_b|);
    see the module docstring."""
    d = first_divergence(ta, tb)
    upto = min(len(ta), len(tb)) if d is None else d
    moves: list[float] = []
    drifts: list[float] = []
    for x, y in zip(ta[:upto], tb[:upto], strict=False):
        if x.logprob is None or y.logprob is None or x.merged or y.merged:
            continue
        drifts.append(round(abs(x.logprob - y.logprob), digits))
        others = [alt for alt in x.top if not same_token(alt, x)]
        if not others:
            continue
        runner_up = max(others, key=lambda alt: alt.logprob)
        lp_b = next((alt.logprob for alt in y.top if same_token(alt, runner_up)), None)
        if lp_b is not None:
            moves.append(round(abs((x.logprob - runner_up.logprob) - (y.logprob - lp_b)),
                               digits))
    return {"moves": moves, "drifts": drifts}


class NoiseSamples(msgspec.Struct):
    """What ``--calibrate`` reads from A/A records: flip swings, margin moves, drifts."""

    swings: list[float] = msgspec.field(default_factory=list)
    moves: list[float] = msgspec.field(default_factory=list)
    drifts: list[float] = msgspec.field(default_factory=list)

    def add(self, record: dict[str, Any]) -> None:
        """Take the samples of one A/A record (other records are ignored)."""
        if record_kind(record) is not RecordKind.AA:
            return
        fx = record.get("forensics")
        if isinstance(fx, dict) and _finite(fx.get("swing")):
            self.swings.append(float(fx["swing"]))
        noise = record.get("noise")
        if isinstance(noise, dict):
            for key in ("moves", "drifts"):
                values = noise.get(key)
                if isinstance(values, list):
                    getattr(self, key).extend(float(v) for v in values if _finite(v))

    def tie_samples(self) -> list[float]:
        return [*self.swings, *self.moves]

    def calibrated(self, th: Thresholds, min_samples: int = MIN_SAMPLES) -> Thresholds:
        """τ_tie = max(default, p99 of swings and moves); τ_drift = max(default, p99 of
        drifts); each only from ``min_samples`` samples on; τ_regress unchanged."""
        tie = calibrated_tau_tie(th.tau_tie, self.tie_samples(), min_samples)
        drift = calibrated_tau_tie(th.tau_drift, self.drifts, min_samples)
        return replace(th, tau_tie=round(tie, 6), tau_drift=round(drift, 6))


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and \
        math.isfinite(value)


def aa_samples(records: Iterable[dict[str, Any]]) -> NoiseSamples:
    """The noise samples of every A/A record in ``records``."""
    out = NoiseSamples()
    for r in records:
        out.add(r)
    return out


def aa_swings(records: Iterable[dict[str, Any]]) -> list[float]:
    """The swings recorded in A/A records (no-match ones with a computable swing)."""
    return aa_samples(records).swings


class AASummary(msgspec.Struct):
    records: int
    parity: int
    exact: int
    aa_exact_rate: float | None
    aa_exact_ci95: tuple[float, float] | None
    ab_exact_rate: float | None
    ab_minus_aa: float | None
    ab_minus_aa_ci95: tuple[float, float] | None
    verdicts: dict[str, int]
    swing_p99: float | None  # over flip swings and margin moves (τ_tie with --calibrate)
    drift_p99: float | None  # over chosen-token drifts (τ_drift with --calibrate)
    flips: int  # A/A pairs with a flip swing
    noise_tokens: int  # matched A/A tokens with a margin move
    verdict: str | None = None  # aa_verdict: None without A/B rounds

    def to_json(self) -> dict[str, Any]:
        out = msgspec.structs.asdict(self)
        for key in ("aa_exact_ci95", "ab_minus_aa_ci95"):
            out[key] = list(out[key]) if out[key] else None
        return out


_PARITY = ("exact", "prefix-only", "no-match")


def summarise_aa(records: Iterable[dict[str, Any]], ab_exact: int, ab_parity: int
                 ) -> AASummary:
    """The A/A figures from the log's ``kind: aa`` records beside the A/B counts."""
    total = parity = exact = 0
    verdicts: dict[str, int] = {}
    samples = NoiseSamples()
    for r in records:
        if record_kind(r) is not RecordKind.AA:
            continue
        total += 1
        samples.add(r)
        bucket = r.get("bucket")
        if bucket not in _PARITY:
            continue
        parity += 1
        exact += bucket == "exact"
        fx = r.get("forensics")
        if isinstance(fx, dict):
            label = fx.get("verdict") or fx.get("cause")
            if isinstance(label, str):
                verdicts[label] = verdicts.get(label, 0) + 1
    diff = newcombe_diff(ab_exact, ab_parity, exact, parity)
    return AASummary(
        records=total, parity=parity, exact=exact,
        aa_exact_rate=exact / parity if parity else None,
        aa_exact_ci95=wilson(exact, parity),
        ab_exact_rate=ab_exact / ab_parity if ab_parity else None,
        ab_minus_aa=diff[0] if diff else None,
        ab_minus_aa_ci95=diff[1] if diff else None,
        verdicts=dict(sorted(verdicts.items())),
        swing_p99=_p99(samples.tie_samples()), drift_p99=_p99(samples.drifts),
        flips=len(samples.swings), noise_tokens=len(samples.moves),
        verdict=aa_verdict(parity, diff[1] if diff else None) if ab_parity else None,
    )


def _p99(values: list[float]) -> float | None:
    return round(float(np.percentile(values, 99)), 6) if values else None
