"""Perplexity and distribution comparison of two servers on the same tokens (pure).

Input per side: for every scored position, the actual token (its text), its log
probability, and the top-K log probabilities the server reported there. Output:

- per side: tokens, mean NLL and PPL = exp(mean NLL);
- paired (positions where both sides scored the same token): mean of
  ``NLL(v2) − NLL(v1)`` with its standard error (positions treated as independent, as
  llama.cpp's ``perplexity`` does), mean KL(v1‖v2), the same-top-1 rate with its
  standard error (llama.cpp's "same top p") and the RMS of Δp (the difference in the
  actual token's probability).

KL(v1‖v2) at a position is computed over the union U of both top-K sets (plus the actual
token, whose probability each side reports) and one tail bucket for everything else.
A token of U missing from one side's list has an unknown probability, bounded by that
side's smallest listed probability and by the mass left outside its list; it gets the
smaller of that bound and the left-over mass shared among the missing tokens and the
tail. Probabilities below 1e-10 are floored. With K → vocabulary size this is the exact
KL; with small K it is an approximation that is 0 when both sides agree exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import numpy as np
from msgspec.structs import asdict  # shallow: every field is a number

EPS = 1e-10


class TokenScore(msgspec.Struct, frozen=True):
    token: str
    logprob: float
    top: Mapping[str, float] = msgspec.field(default_factory=dict)


class SidePpl(msgspec.Struct, frozen=True):
    tokens: int
    mean_nll: float | None
    ppl: float | None
    nll_se: float | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class PairedPpl(msgspec.Struct, frozen=True):
    positions: int
    mismatched: int
    nll_diff_mean: float | None
    nll_diff_se: float | None
    kld_mean: float | None
    kld_se: float | None
    kld_p99: float | None
    kld_max: float | None
    same_top1_rate: float | None
    same_top1_se: float | None
    rms_dp: float | None
    mean_dp: float | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _r(value: float | None, digits: int = 6) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


def side_ppl(logprobs: Sequence[float]) -> SidePpl:
    """Mean NLL and perplexity of one side's scored tokens."""
    lp = np.asarray(logprobs, dtype=np.float64)
    if lp.size == 0:
        return SidePpl(0, None, None)
    nll = -lp
    mean = float(nll.mean())
    se = float(nll.std(ddof=1) / math.sqrt(nll.size)) if nll.size > 1 else None
    return SidePpl(int(lp.size), _r(mean, 8), _r(math.exp(mean), 6), _r(se, 8))


def _side_dist(top: Mapping[str, float], actual: str, actual_lp: float,
               union: list[str]) -> tuple[np.ndarray, float]:
    """This side's probabilities over ``union`` and its tail (see the module doc)."""
    known = {t: math.exp(v) for t, v in top.items() if v is not None and math.isfinite(v)}
    floor = min(known.values()) if known else 1.0
    known.setdefault(actual, math.exp(actual_lp))
    listed = sum(known[t] for t in union if t in known)
    missing = [t for t in union if t not in known]
    rest = max(0.0, 1.0 - listed)
    guess = min(floor, rest / (len(missing) + 1)) if missing else 0.0
    probs = np.array([known.get(t, guess) for t in union], dtype=np.float64)
    tail = max(0.0, 1.0 - float(probs.sum()))
    return probs, tail


def kl_union(a: TokenScore, b: TokenScore) -> float:
    """KL(a‖b) over the union of both top-K sets plus a tail bucket, in nats."""
    union = sorted(set(a.top) | set(b.top) | {a.token})
    pa, ta = _side_dist(a.top, a.token, a.logprob, union)
    pb, tb = _side_dist(b.top, b.token, b.logprob, union)
    p = np.maximum(np.append(pa, ta), EPS)
    q = np.maximum(np.append(pb, tb), EPS)
    return max(0.0, float(np.sum(p * np.log(p / q))))


def top1(score: TokenScore) -> str | None:
    if not score.top:
        return None
    return max(sorted(score.top), key=lambda t: score.top[t])


def paired(v1: Sequence[TokenScore], v2: Sequence[TokenScore]) -> PairedPpl | None:
    """Compare the two sides position by position; None when they cannot be paired
    (different lengths: the sides tokenized the text differently)."""
    if len(v1) != len(v2) or not v1:
        return None
    same = [i for i in range(len(v1)) if v1[i].token == v2[i].token]
    n = len(same)
    if n == 0:
        return PairedPpl(0, len(v1), *([None] * 10))
    lp1 = np.array([v1[i].logprob for i in same])
    lp2 = np.array([v2[i].logprob for i in same])
    d = lp1 - lp2  # NLL(v2) − NLL(v1)
    kl = np.array([kl_union(v1[i], v2[i]) for i in same])
    with_top = [i for i in same if v1[i].top and v2[i].top]
    agree = np.array([top1(v1[i]) == top1(v2[i]) for i in with_top], dtype=np.float64)
    dp = np.exp(lp2) - np.exp(lp1)

    def se(x: np.ndarray) -> float | None:
        return float(x.std(ddof=1) / math.sqrt(x.size)) if x.size > 1 else None

    rate = float(agree.mean()) if agree.size else None
    rate_se = math.sqrt(rate * (1 - rate) / agree.size) if rate is not None else None
    return PairedPpl(
        positions=n, mismatched=len(v1) - n,
        nll_diff_mean=_r(float(d.mean()), 8), nll_diff_se=_r(se(d), 8),
        kld_mean=_r(float(kl.mean()), 8), kld_se=_r(se(kl), 8),
        kld_p99=_r(float(np.percentile(kl, 99)), 8), kld_max=_r(float(kl.max()), 8),
        same_top1_rate=_r(rate), same_top1_se=_r(rate_se),
        rms_dp=_r(float(np.sqrt(np.mean(dp * dp)))), mean_dp=_r(float(dp.mean())),
    )


def windows(n_tokens: int, size: int) -> list[tuple[int, int]]:
    """Non-overlapping ``[start, end)`` token windows: full windows only, or one window
    of everything when the text is shorter than one window."""
    if n_tokens <= 0 or size <= 1:
        return []
    if n_tokens < size:
        return [(0, n_tokens)]
    return [(i, i + size) for i in range(0, n_tokens - size + 1, size)]


class SideRun(msgspec.Struct):
    """One side's part of a ``ppl`` run (as logged)."""

    url: str
    method: str
    result: SidePpl
    seconds: float
    requests: int = 0
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "method": self.method, **self.result.to_json(),
                "seconds": round(self.seconds, 3), "requests": self.requests,
                "error": self.error}


def run_record(ts: str, text: Mapping[str, Any], window: int, top_k: int,
               n_windows: int, sides: Mapping[str, SideRun], pair: PairedPpl | None,
               notes: Sequence[str] = ()) -> dict[str, Any]:
    """The line appended to the ``ppl`` JSONL for one run."""
    ppl1 = sides["v1"].result.ppl if "v1" in sides else None
    ppl2 = sides["v2"].result.ppl if "v2" in sides else None
    return {
        "kind": "ppl", "ts": ts, "text": dict(text), "window": window, "top_k": top_k,
        "windows": n_windows, "v1": sides["v1"].to_json() if "v1" in sides else None,
        "v2": sides["v2"].to_json() if "v2" in sides else None,
        "ppl_delta": _r(ppl2 - ppl1) if ppl1 is not None and ppl2 is not None else None,
        "paired": pair.to_json() if pair else None, "notes": list(notes),
    }
