"""Per-round token statistics (core.tokstats) on hand-made token streams."""

from __future__ import annotations

import math

import numpy as np

from shadow_burnin.core.columns import ColumnBuilder
from shadow_burnin.core.tokstats import FIELDS, MARGIN_FIELDS, summarise, to_json, values
from shadow_burnin.core.verdict import Alt, Token


def tok(text: str, top: dict[str, float], chosen: float | None = None) -> Token:
    alts = tuple(Alt(t, lp) for t, lp in sorted(top.items(), key=lambda kv: -kv[1]))
    return Token(text, top[text] if chosen is None else chosen, None, alts)


def test_matched_tokens_give_logprob_and_margin_moves() -> None:
    v1 = [tok("A", {"A": -0.1, "B": -2.5, "C": -3.0}),
          tok("x", {"x": -0.50, "y": -0.52, "z": -4.0})]
    v2 = [tok("A", {"A": -0.15, "B": -2.45, "C": -3.0}),
          tok("x", {"x": -0.49, "y": -0.53, "w": -4.0})]
    s = summarise(v1, v2)
    assert s is not None and set(s) == set(FIELDS)
    assert s["n"] == 2 and s["move_n"] == 2
    assert math.isclose(s["dlp_sum"], 0.06, abs_tol=1e-6)
    assert math.isclose(s["dlp_max"], 0.05, abs_tol=1e-6)
    # margins 2.4 → 2.3 and 0.02 → 0.04: moves 0.1 and 0.02
    assert math.isclose(s["move_sum"], 0.12, abs_tol=1e-6)
    assert math.isclose(s["move_max"], 0.1, abs_tol=1e-6)
    # one matched token with margin 0.02: below 0.025 and every larger edge
    assert [s[m] for m in MARGIN_FIELDS] == [0, 1, 1, 1, 1, 1, 1]
    assert math.isclose(s["topk_overlap"], 1 + 2 / 3, abs_tol=1e-5)
    assert s["topk_same"] == 1 and s["off_top1"] == 0 and s["k"] == 3
    assert all(math.isnan(s[k]) for k in ("div_margin", "div_swing", "div_outside"))


def test_the_divergence_token_is_described_not_counted_as_matched() -> None:
    v1 = [tok("A", {"A": -0.1, "B": -3.0}), tok("p", {"p": -0.6, "q": -0.8}),
          tok("z", {"z": -0.1, "y": -3.0})]
    v2 = [tok("A", {"A": -0.1, "B": -3.0}), tok("q", {"q": -0.65, "p": -0.75}),
          tok("p", {"p": -0.1, "y": -3.0})]
    s = summarise(v1, v2)
    assert s is not None
    assert s["n"] == 1
    assert math.isclose(s["div_margin"], 0.2, abs_tol=1e-6)
    assert math.isclose(s["div_swing"], 0.2 + 0.1, abs_tol=1e-6)
    assert s["div_outside"] == 0


def test_a_token_outside_the_top_k_and_an_off_top1_pick() -> None:
    v1 = [tok("A", {"A": -0.5, "B": -0.3}, chosen=-0.5), tok("p", {"p": -0.1, "q": -3})]
    v2 = [tok("A", {"A": -0.5, "B": -0.3}, chosen=-0.5), tok("r", {"r": -0.1, "s": -3})]
    s = summarise(v1, v2)
    assert s is not None
    assert s["off_top1"] == 1  # a side picked A while ranking B higher
    assert s["div_outside"] == 1 and math.isnan(s["div_swing"])


def test_no_tokens_no_stats_and_the_record_form_round_trips() -> None:
    assert summarise(None, [tok("A", {"A": 0.0})]) is None
    assert summarise([], []) is None
    s = summarise([tok("A", {"A": -0.1, "B": -2})], [tok("A", {"A": -0.1, "B": -2})])
    assert s is not None
    obj = to_json(s)
    assert obj["div_swing"] is None and isinstance(obj["n"], int)
    back = values(obj)
    assert back is not None
    np.testing.assert_array_equal(back, [s[k] for k in FIELDS])
    assert values("junk") is None
    assert math.isnan(values({"n": True})[0])  # type: ignore[index]


def test_columns_carry_tokstats_with_nan_where_a_round_has_none() -> None:
    base = {"schema": 1, "bucket": "exact", "ts": "2026-11-29T10:00:00.000Z",
            "v1": {"latency_ms": 1.0}, "v2": {"latency_ms": 1.0}}
    b = ColumnBuilder()
    b.add_all([{**base, "tokstats": {"n": 7, "dlp_sum": 0.5}}, base])
    cols = b.build()
    assert set(cols.tokstats) == set(FIELDS)
    assert cols.tokstats["n"].dtype == np.float32
    assert cols.tokstats["n"][0] == 7 and math.isnan(cols.tokstats["n"][1])
    assert math.isnan(cols.tokstats["dlp_max"][0])
    assert cols.select(np.array([False, True])).tokstats["n"].size == 1
    empty = ColumnBuilder()
    empty.add_all([base])
    assert empty.build().tokstats == {}


def test_the_prompt_length_is_recorded_as_ctx_when_given() -> None:
    v = [tok("A", {"A": -0.1, "B": -2.0})]
    with_ctx = summarise(v, v, context=1234)
    without = summarise(v, v)
    assert with_ctx is not None and without is not None
    assert with_ctx["ctx"] == 1234 and to_json(with_ctx)["ctx"] == 1234
    assert math.isnan(without["ctx"]) and to_json(without)["ctx"] is None
