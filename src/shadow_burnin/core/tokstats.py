"""Per-round token statistics: a compact, flat summary of both sides' logprobs.

Every round whose two replies both carry logprobs (exact rounds too) gets a
``"tokstats"`` object in its record: numbers only, the same names on every round
(:data:`FIELDS`), so that a log's rounds become one float32 column per name
(``core.columns.Columns.tokstats``) and the run-level verdict (``core.runverdict``) is
computed from columns, without re-reading the log.

Over the **matched** tokens (the same token on both sides, before the first divergence)
with ``lp_s`` a side's logprob of the chosen token and ``m`` v1's top-2 margin (its
chosen token's logprob minus the best other one's):

``n``                    matched tokens with a logprob on both sides;
``dlp_sum/_sq/_max``     Σ|lp_v1 − lp_v2|, Σ(lp_v1 − lp_v2)², max — how much numeric
                         noise moves a chosen token's logprob (a broken model moves it far);
``move_n/_sum/_sq/_max`` the margin move: v1's margin between its top-1 and top-2 against
                         v2's logprobs of the same two tokens (where v2's top-K has both):
                         the quantity that, when it exceeds the margin, flips a token;
``margin_lt_<x>``        how many matched tokens have v1's margin below x nats (x = 0.01,
                         0.025, 0.05, 0.1, 0.2, 0.4, 0.8; cumulative): the tokens at risk,
                         from which the noise model predicts the number of flips;
``topk_overlap``         Σ |top-K(v1) ∩ top-K(v2)| / K — top-K agreement;
``topk_same``            tokens whose top-K lists are the same tokens in the same order;
``off_top1``             tokens (matched or the divergence token) where a side's greedy
                         pick is not its own top-1 (a sampler setting, e.g. repeat_penalty);
``k``                    the smaller top-K of the two sides;
``div_margin``           v1's top-2 margin at the first differing token (NaN: none);
``div_swing``            how far the a-vs-b margin moved there (``core.verdict``'s swing;
                         NaN when a token is outside the other's top-K);
``div_outside``          1 when a differing token is missing from the other side's top-K;
``ctx``                  the prompt's length in characters (NaN: not given) — where in the
                         context the matched tokens sit, for the context test of
                         ``core.runverdict`` (a wrong RoPE base moves margins more at
                         long contexts; numeric noise does not).

About 25 numbers, ≈ 410 bytes of JSON per round (rounded to 5 digits).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from shadow_burnin.core.verdict import SELF_TOLERANCE, Alt, Token, lookup, same_token

MARGIN_EDGES: tuple[float, ...] = (0.01, 0.025, 0.05, 0.1, 0.2, 0.4, 0.8)


def _edge_name(x: float) -> str:
    return "margin_lt_" + f"{x:g}".replace(".", "_")


MARGIN_FIELDS: tuple[str, ...] = tuple(_edge_name(x) for x in MARGIN_EDGES)
FIELDS: tuple[str, ...] = (
    "n", "dlp_sum", "dlp_sq", "dlp_max", "move_n", "move_sum", "move_sq", "move_max",
    *MARGIN_FIELDS, "topk_overlap", "topk_same", "off_top1", "k",
    "div_margin", "div_swing", "div_outside", "ctx",
)
DIGITS = 5


def _margin(t: Token) -> float | None:
    """The chosen token's logprob minus the best *other* alternative's; None without
    alternatives."""
    if t.logprob is None:
        return None
    others = [a.logprob for a in t.top if not same_token(a, t)]
    if not others:
        return None
    return t.logprob - max(others)


def _second(t: Token) -> Alt | None:
    others = [a for a in t.top if not same_token(a, t)]
    return max(others, key=lambda a: a.logprob) if others else None


def _off_top1(t: Token) -> bool:
    if t.logprob is None or not t.top:
        return False
    best = max(t.top, key=lambda a: a.logprob)
    return best.logprob - t.logprob > SELF_TOLERANCE and not same_token(best, t)


def _overlap(x: Sequence[Alt], y: Sequence[Alt]) -> tuple[float, bool]:
    k = max(len(x), len(y))
    common = sum(1 for a in x if any(same_token(a, b) for b in y))
    same = len(x) == len(y) and all(same_token(a, b) for a, b in zip(x, y, strict=True))
    return common / k, same


def summarise(tokens_v1: Sequence[Token] | None, tokens_v2: Sequence[Token] | None,
              context: int | None = None) -> dict[str, float] | None:
    """The round's ``tokstats`` object; None when a side has no tokens to compare.
    ``context``: the prompt's length in characters (the ``ctx`` field)."""
    if not tokens_v1 or not tokens_v2:
        return None
    out: dict[str, float] = dict.fromkeys(FIELDS, 0.0)
    d = None
    for i, (x, y) in enumerate(zip(tokens_v1, tokens_v2, strict=False)):
        if not same_token(x, y):
            d = i
            break
        out["off_top1"] += _off_top1(x) or _off_top1(y)
        if x.logprob is None or y.logprob is None:
            continue
        out["n"] += 1
        dlp = abs(x.logprob - y.logprob)
        out["dlp_sum"] += dlp
        out["dlp_sq"] += dlp * dlp
        out["dlp_max"] = max(out["dlp_max"], dlp)
        m = _margin(x)
        if m is not None:
            for name, edge in zip(MARGIN_FIELDS, MARGIN_EDGES, strict=True):
                out[name] += m < edge
        second = _second(x)
        lp2_second = lookup(y.top, Token(second.token, None, second.raw)) \
            if second is not None else None
        if m is not None and lp2_second is not None:
            move = abs(m - (y.logprob - lp2_second))
            out["move_n"] += 1
            out["move_sum"] += move
            out["move_sq"] += move * move
            out["move_max"] = max(out["move_max"], move)
        if x.top and y.top:
            share, same = _overlap(x.top, y.top)
            out["topk_overlap"] += share
            out["topk_same"] += same
    ks = [len(t.top) for t in (*tokens_v1[:1], *tokens_v2[:1])]
    out["k"] = float(min(ks))
    out["div_margin"] = out["div_swing"] = out["div_outside"] = math.nan
    out["ctx"] = math.nan if context is None else float(context)
    if d is not None:
        a, b = tokens_v1[d], tokens_v2[d]
        out["off_top1"] += _off_top1(a) or _off_top1(b)
        m = _margin(a)
        out["div_margin"] = math.nan if m is None else m
        lp1_b, lp2_a = lookup(a.top, b), lookup(b.top, a)
        out["div_outside"] = float(lp1_b is None or lp2_a is None) if a.top and b.top \
            else math.nan
        if None not in (lp1_b, lp2_a, a.logprob, b.logprob):
            assert lp1_b is not None and lp2_a is not None
            assert a.logprob is not None and b.logprob is not None
            out["div_swing"] = (a.logprob - lp1_b) + (b.logprob - lp2_a)
    return {k: _round(v) for k, v in out.items()}


def _round(v: float) -> float:
    if math.isnan(v):
        return v
    return float(round(v, DIGITS)) if v != int(v) else float(int(v))


def to_json(stats: dict[str, float]) -> dict[str, Any]:
    """The record form: NaN (no such figure) becomes null; whole numbers are ints."""
    out: dict[str, Any] = {}
    for k in FIELDS:
        v = stats.get(k, math.nan)
        out[k] = None if math.isnan(v) else (int(v) if v == int(v) else v)
    return out


def values(obj: Any) -> list[float] | None:
    """A record's ``tokstats`` object as one float per :data:`FIELDS` name (NaN where it
    has none or a non-number); None when it is not an object."""
    if not isinstance(obj, dict):
        return None
    out = []
    for k in FIELDS:
        v = obj.get(k)
        out.append(float(v) if isinstance(v, int | float) and not isinstance(v, bool)
                   else math.nan)
    return out
