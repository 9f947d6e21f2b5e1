"""Token-level forensics of one non-exact round: pure functions over normalized logprobs.

For a ``no-match`` round, with ``d`` the first token where the two token streams differ,
``a`` = v1's token there and ``b`` = v2's (``lp_s(x)``: side ``s``'s logprob of ``x``):

- ``margin_v1 = lp_v1(a) − lp_v1(b)``, ``margin_v2 = lp_v2(b) − lp_v2(a)``;
- ``swing = margin_v1 + margin_v2`` (nats): how far the a-vs-b margin moved;
- ``prefix_drift`` = max |lp_v1 − lp_v2| over the matched tokens before ``d``;
- verdict, checked in this order:
  ``regression`` a side's greedy pick is not its own top-1 (its logprobs do not describe
                 its choice: a sampler setting such as ``repeat_penalty``);
  ``near-tie``   b in v1's top-K, a in v2's top-K, swing ≤ τ_tie, drift ≤ τ_drift;
  ``regression`` a token missing from the other side's top-K, swing > τ_regress, or
                 drift > 2·τ_drift;
  ``unexplained`` anything else, and whenever logprobs are missing.

The default thresholds come from the noise model (``SAME_PATH_SCALE``: one kernel's
numeric noise; the run-level prior ``NOISE_SCALE`` is twice it): τ_tie = the swing that
noise exceeds at 1 % of tokens (0.46 nats), τ_regress = at 0.01 % (0.92), τ_drift = 0.25
(benign prefix drifts).

Tokens are compared by their bytes when both sides give them, otherwise by their text
(U+FFFD dropped), so a partial UTF-8 token reads the same from every server. A
``prefix-only`` round gets a cause instead, and re-fires an outcome: see ``outcomes``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, TypedDict

import msgspec
import msgspec.structs

VERDICTS: tuple[str, ...] = ("near-tie", "regression", "unexplained")


class Alt(msgspec.Struct, frozen=True):
    """One top-K alternative at a position."""

    token: str
    logprob: float
    raw: bytes | None = None


class Token(msgspec.Struct, frozen=True):
    """One generated token: its text (and bytes, when known), logprob and top-K."""

    token: str
    logprob: float | None
    raw: bytes | None = None
    top: tuple[Alt, ...] = ()
    merged: bool = False  # several byte pieces reported as one character (last one's top)


def _loose(x: Token | Alt) -> str:
    if x.raw is not None:
        return x.raw.decode("utf-8", "ignore")
    return x.token.replace("\ufffd", "")


def same_token(x: Token | Alt, y: Token | Alt) -> bool:
    """Equal bytes when both are known; else equal text (partial characters dropped)."""
    if x.raw is not None and y.raw is not None:
        return x.raw == y.raw
    return x.token == y.token or _loose(x) == _loose(y)


def lookup(top: Sequence[Alt], tok: Token) -> float | None:
    """``tok``'s logprob among the alternatives ``top``; None when it is not there."""
    for alt in top:
        if same_token(alt, tok):
            return alt.logprob
    return None


def first_divergence(t1: Sequence[Token], t2: Sequence[Token]) -> int | None:
    """Index of the first differing token; the shorter length if one stream is a prefix
    of the other; None if the streams agree entirely."""
    n = min(len(t1), len(t2))
    for i in range(n):
        if not same_token(t1[i], t2[i]):
            return i
    return n if len(t1) != len(t2) else None


def prefix_drift(t1: Sequence[Token], t2: Sequence[Token], upto: int) -> float:
    """max |lp_v1 − lp_v2| over tokens ``[0, upto)`` where both logprobs are known."""
    drift = 0.0
    for x, y in zip(t1[:upto], t2[:upto], strict=False):
        if x.logprob is not None and y.logprob is not None:
            drift = max(drift, abs(x.logprob - y.logprob))
    return drift


# The noise model's scale (``core.runverdict.NoisePrior.move_scale``): numeric noise moves
# a token's top-2 margin by a Laplace amount of this mean (nats). The rule that sets it
# (README "Run-level verdict"): the largest mean margin move of a benign pair in
# benchmarks/verdicts — another attention kernel (flash attention, 0.151–0.158) or another
# engine (mistral.rs, 0.160) on the same weights — with 25 % headroom, rounded: 0.2.
NOISE_SCALE = 0.2
# One kernel on other thread/batch paths moves them half as much (mean ≤ 0.071). The
# per-round thresholds follow from it: a flip whose swing stays within one kernel's noise
# (a move above scale·ln 100 happens at 1 % of its tokens) is a near-tie; one beyond its
# 0.01 % tail (scale·ln 10⁴), further than any benign pair's flip went but one, is a
# regression; in between — another kernel's noise or a change — it is unexplained.
SAME_PATH_SCALE = 0.1
TIE_SWING = round(SAME_PATH_SCALE * math.log(100), 3)  # 0.461 nats
REGRESS_SWING = round(SAME_PATH_SCALE * math.log(1e4), 3)  # 0.921 nats
TIE_DRIFT = 0.25  # benign pairs' prefix drifts: p90 0.21–0.26 nats, max 0.41


class Thresholds(msgspec.Struct, frozen=True):
    """Per-round verdict thresholds: the noise model's (see ``NOISE_SCALE``) unless set
    in ``[forensics]`` or widened by ``--calibrate``."""

    tau_tie: float = TIE_SWING
    tau_drift: float = TIE_DRIFT
    tau_regress: float = REGRESS_SWING


class TokenVerdict(msgspec.Struct, frozen=True):
    """The verdict of a no-match round and the figures behind it."""

    verdict: str
    reason: str
    divergence_token: int | None = None
    a: str | None = None
    b: str | None = None
    swing: float | None = None
    swing_min: float | None = None  # a lower bound when a token is outside the top-K
    margin_v1: float | None = None
    margin_v2: float | None = None
    prefix_drift: float | None = None
    b_in_v1_top: bool | None = None
    a_in_v2_top: bool | None = None

    def to_json(self, digits: int = 5) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in (f.name for f in msgspec.structs.fields(self)):
            value = getattr(self, key)
            if value is None:
                continue
            out[key] = round(value, digits) if isinstance(value, float) else value
        return out


def _margin(lp_own: float, other: float | None, top: Sequence[Alt]) -> tuple[float | None,
                                                                            float | None]:
    """(exact margin, lower bound): the bound uses the weakest listed alternative."""
    if other is not None:
        return lp_own - other, None
    if top:
        return None, max(0.0, lp_own - min(alt.logprob for alt in top))
    return None, None


_THRESHOLDS = Thresholds()  # the default (one instance, as the default argument was)


def token_verdict(t1: Sequence[Token] | None, t2: Sequence[Token] | None,
                  th: Thresholds = _THRESHOLDS) -> TokenVerdict:
    """The verdict for a no-match round from both sides' token streams."""
    if not t1 or not t2:
        side = "v1" if not t1 else "v2"
        return TokenVerdict("unexplained", f"no logprobs from {side}")
    d = first_divergence(t1, t2)
    if d is None:
        return TokenVerdict("unexplained", f"the {len(t1)} tokens agree on both sides")
    if d >= len(t1) or d >= len(t2):
        ended = "v1" if d >= len(t1) else "v2"
        return TokenVerdict("unexplained", f"{ended}'s tokens end at token {d} (texts differ)",
                            divergence_token=d)
    ta, tb = t1[d], t2[d]
    drift = prefix_drift(t1, t2, d)
    base = _Base(divergence_token=d, a=ta.token, b=tb.token, prefix_drift=drift)
    if ta.logprob is None or tb.logprob is None:
        side = "v1" if ta.logprob is None else "v2"
        return TokenVerdict("unexplained", f"no logprob from {side} at token {d}", **base)
    if ta.merged or tb.merged:
        return TokenVerdict("unexplained", f"token {d} is a character made of byte pieces "
                            "that the server reports as one: the pieces are not comparable",
                            **base)
    if not ta.top or not tb.top:
        side = "v1" if not ta.top else "v2"
        return TokenVerdict("unexplained", f"no top-K alternatives from {side} at token {d}",
                            **base)
    lp1_b, lp2_a = lookup(ta.top, tb), lookup(tb.top, ta)
    m1, m1_min = _margin(ta.logprob, lp1_b, ta.top)
    m2, m2_min = _margin(tb.logprob, lp2_a, tb.top)
    swing = m1 + m2 if m1 is not None and m2 is not None else None
    swing_min = None
    if swing is None:
        lo1 = m1 if m1 is not None else m1_min
        lo2 = m2 if m2 is not None else m2_min
        swing_min = lo1 + lo2 if lo1 is not None and lo2 is not None else None
    own = _own_choice_gap(ta, "v1") or _own_choice_gap(tb, "v2")
    if own is not None:  # a sampler setting differs: not numeric noise
        return TokenVerdict("regression", own, swing=swing, margin_v1=m1, margin_v2=m2,
                            b_in_v1_top=lp1_b is not None, a_in_v2_top=lp2_a is not None,
                            swing_min=swing_min, **base)
    fig = TokenVerdict("", "", swing=swing, swing_min=swing_min, margin_v1=m1, margin_v2=m2,
                       b_in_v1_top=lp1_b is not None, a_in_v2_top=lp2_a is not None, **base)
    verdict, reason = _decide(fig, th, len(ta.top), len(tb.top))
    return _with(fig, verdict, reason)


class _Base(TypedDict):
    """The fields every verdict past the first differing token carries."""

    divergence_token: int
    a: str
    b: str
    prefix_drift: float | None


SELF_TOLERANCE = 1e-3  # nats: a greedy pick may trail its own top-1 by rounding only


def _own_choice_gap(t: Token, side: str) -> str | None:
    """At temperature 0 a side picks its own top-1; if its logprobs rank another token
    higher, they do not describe its choice (a sampler setting such as a repeat penalty)."""
    best = max(t.top, key=lambda alt: alt.logprob)
    if t.logprob is not None and best.logprob - t.logprob > SELF_TOLERANCE and \
            not same_token(best, t):
        return (f"{side} chose {t.token!r} ({t.logprob:.3g}) but ranks {best.token!r} "
                f"higher ({best.logprob:.3g}): its logprobs do not describe its greedy "
                "choice (a sampler setting, e.g. repeat_penalty?)")
    return None


def _decide(f: TokenVerdict, th: Thresholds, k1: int, k2: int) -> tuple[str, str]:
    drift = f.prefix_drift or 0.0
    swing = f.swing
    if swing is not None and swing <= th.tau_tie and drift <= th.tau_drift:
        return "near-tie", f"swing {swing:.3g} ≤ {th.tau_tie:g}, drift {drift:.3g}"
    if not f.b_in_v1_top:
        return "regression", f"v2's token {f.b!r} is not in v1's top-{k1}"
    if not f.a_in_v2_top:
        return "regression", f"v1's token {f.a!r} is not in v2's top-{k2}"
    assert swing is not None
    if swing > th.tau_regress:
        return "regression", f"swing {swing:.3g} > {th.tau_regress:g} nats"
    if drift > 2 * th.tau_drift:
        return "regression", f"prefix drift {drift:.3g} > {2 * th.tau_drift:g} nats"
    if swing > th.tau_tie:
        return "unexplained", f"swing {swing:.3g} between {th.tau_tie:g} and {th.tau_regress:g}"
    return "unexplained", f"prefix drift {drift:.3g} between {th.tau_drift:g} and " \
                          f"{2 * th.tau_drift:g}"


def _with(f: TokenVerdict, verdict: str, reason: str) -> TokenVerdict:
    return msgspec.structs.replace(f, verdict=verdict, reason=reason)


def token_window(tokens: Sequence[Token], center: int, radius: int = 2,
                 digits: int = 5) -> list[dict[str, Any]]:
    """The compact log form of tokens ``center ± radius``: index, text, logprob, top-K
    (``x``: the token's bytes in hex when they are not whole UTF-8)."""
    out: list[dict[str, Any]] = []
    for i in range(max(0, center - radius), min(len(tokens), center + radius + 1)):
        t = tokens[i]
        item: dict[str, Any] = {"i": i, "t": t.token,
                                "lp": None if t.logprob is None else round(t.logprob, digits),
                                "top": [[alt.token, round(alt.logprob, digits)]
                                        for alt in t.top]}
        if t.raw is not None and not _whole(t.raw, t.token):
            item["x"] = t.raw.hex()
        out.append(item)
    return out


def _whole(raw: bytes, text: str) -> bool:
    try:
        return raw.decode("utf-8") == text
    except UnicodeDecodeError:
        return False
