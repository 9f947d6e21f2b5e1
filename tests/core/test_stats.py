"""Summary figures against hand-computed expectations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shadow_burnin.core.columns import ColumnBuilder, Columns
from shadow_burnin.core.stats import (
    median_inplace,
    percentiles,
    quantiles_inplace,
    summarise,
    wilson,
)
from tests.core.reference import linear_percentile


def rec(bucket: str, v1: float | None = 100.0, v2: float | None = 120.0, *,
        cat: str = "c", pid: str = "p", prefix: int | None = None) -> dict:
    def side(lat: float | None, up: bool) -> dict:
        if not up:
            return {"text": None, "latency_ms": 5.0, "error": "connection-refused"}
        return {"text": "x", "latency_ms": lat, "ttft_ms": None, "error": None}
    return {
        "bucket": bucket, "category": cat, "prompt_id": pid, "prefix_match_chars": prefix,
        "v1": side(v1, bucket not in ("v1-unreachable", "both-unreachable")),
        "v2": side(v2, bucket not in ("v2-unreachable", "both-unreachable")),
    }


def summary_of(records: list[dict]):
    b = ColumnBuilder()
    b.add_all({**r, "ts": f"2026-01-01T00:00:{i % 60:02d}.000Z"} for i, r in enumerate(records))
    return summarise(b.build())


def test_rates_count_only_parity_rounds() -> None:
    records = ([rec("exact")] * 90 + [rec("no-match", prefix=10)] * 6
               + [rec("prefix-only", prefix=30)] * 2 + [rec("v2-unreachable")] * 1
               + [rec("both-unreachable")] * 1)
    s = summary_of(records)
    assert s.rounds == 100
    assert s.parity_rounds == 98
    assert s.exact_match_rate == pytest.approx(90 / 98)
    assert s.unreachable_rate == {"v1": pytest.approx(0.01), "v2": pytest.approx(0.02)}
    assert s.median_prefix_match_chars == 10.0
    assert s.counts["no-match"] == 6


def test_latency_only_where_side_replied() -> None:
    records = [rec("exact", v1=float(i), v2=float(i) + 50) for i in range(1, 101)]
    records.append(rec("v1-unreachable"))  # v1's 5 ms failure must not count
    s = summary_of(records)
    assert s.latency_ms["v1"]["p50"] == pytest.approx(50.5)
    assert s.latency_ms["v1"]["p95"] == pytest.approx(95.05)  # 95 + 0.05 · (96 − 95)
    v2 = [i + 50.0 for i in range(1, 101)] + [120.0]  # v2 did reply in the v1-unreachable round
    v1 = list(range(1, 101))
    assert s.p95_gap_ms == pytest.approx(linear_percentile(v2, 95) - linear_percentile(v1, 95))
    assert s.p95_gap_ms == pytest.approx(145.0 - 95.05)  # v2: rank 95 of 101 values
    assert s.ttft_ms["v1"] is None


def test_wilson_interval_known_values() -> None:
    lo, hi = wilson(90, 100)
    assert lo == pytest.approx(0.8256, abs=1e-4)
    assert hi == pytest.approx(0.9448, abs=1e-4)
    assert wilson(0, 0) is None
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)


def test_by_category_and_top_divergent() -> None:
    records = ([rec("exact", cat="a", pid="a1")] * 3 + [rec("no-match", cat="b", pid="b1")] * 4
               + [rec("prefix-only", cat="b", pid="b2")] + [rec("exact", cat="b", pid="b2")])
    s = summary_of(records)
    assert s.by_category["a"]["exact_match_rate"] == 1.0
    assert s.by_category["b"]["counts"]["no-match"] == 4
    assert s.by_category["b"]["exact_match_rate"] == pytest.approx(1 / 6)
    assert [t["prompt_id"] for t in s.top_divergent_prompts] == ["b1", "b2"]
    assert s.top_divergent_prompts[1] == {"prompt_id": "b2", "category": "b", "divergent": 1,
                                          "parity_rounds": 2}


def test_empty() -> None:
    s = summary_of([])
    assert s.rounds == 0 and s.exact_match_rate is None and s.p95_gap_ms is None
    assert percentiles(np.array([math.nan])) is None
    assert s.to_json()["exact_match_ci95"] is None


values_st = st.lists(st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64),
    st.integers(0, 20).map(float),  # many ties
    st.floats(-1e3, 1e3)), min_size=0, max_size=400)


@settings(max_examples=300, deadline=None)
@given(values_st, st.lists(st.sampled_from([0, 1, 5, 25, 50, 90, 95, 99, 99.9, 100]),
                           min_size=1, max_size=5))
def test_quantiles_inplace_is_np_percentile_bit_for_bit(values: list[float],
                                                         qs: list[float]) -> None:
    arr = np.array(values, dtype=np.float64)
    finite = arr[~np.isnan(arr)]
    if finite.size == 0:
        assert percentiles(arr) is None
        return
    with np.errstate(invalid="ignore"):  # numpy's own NaN from inf - inf
        want = np.percentile(finite, qs)
        ref = np.percentile(finite, (50, 95, 99))
    got = quantiles_inplace(finite.copy(), qs)
    assert np.array_equal(np.array(got), want, equal_nan=True), (got, want)
    # the same with the NaNs left in place (numpy's partition orders them last)
    in_place = quantiles_inplace(arr.copy(), qs, finite.size)
    assert np.array_equal(np.array(in_place), want, equal_nan=True), (in_place, want)
    # percentiles() rounds the same figures
    expect = {f"p{q}": round(float(v), 3) for q, v in
              zip((50, 95, 99), ref, strict=True)}
    got_p = percentiles(arr)
    assert got_p is not None
    assert all(got_p[k] == expect[k] or (math.isnan(got_p[k]) and math.isnan(expect[k]))
               for k in expect)


@settings(max_examples=300, deadline=None)
@given(values_st.filter(bool))
def test_median_inplace_is_np_median(values: list[float]) -> None:
    arr = np.array(values, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        want = float(np.median(arr))
    got = median_inplace(arr.copy())
    assert repr(got) == repr(want) or (math.isnan(got) and math.isnan(want))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 3)), min_size=1, max_size=9000),
       st.lists(st.integers(0, 6), max_size=4))
def test_category_of_is_the_scatter_of_the_last_row(rows: list[tuple[int, int]],
                                                    asked: list[int]) -> None:
    # prompts 0–6 in any order, each row with a category (a prompt may change category:
    # the last row's wins, as ``cat[prompt] = category`` leaves it); blocks of 4 096 rows
    # are searched from the end, so a prompt seen only early is found too
    prompt = np.array([p for p, _ in rows], dtype=np.int32)
    category = np.array([c for _, c in rows], dtype=np.int32)
    cols = Columns(bucket=np.zeros(prompt.size, dtype=np.int8), latency={}, ttft={},
                   prefix=np.zeros(prompt.size), category=category, prompt=prompt,
                   ts=np.zeros(prompt.size), categories=["a", "b", "c", "d"],
                   prompts=[str(i) for i in range(7)])
    scatter = np.full(7, -1, dtype=np.int64)
    scatter[prompt] = category
    present = [p for p in asked if scatter[p] >= 0]
    assert cols.category_of(asked) == {p: int(scatter[p]) for p in present}
