"""Latency drift: hourly p95, first vs last N, v2 slowing relative to v1."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shadow_burnin.core.drift import DriftTracker, drift, group_p95, hourly_p95, slope
from tests.core.reference import linear_percentile

T0 = 1_800_000_000.0  # an hour boundary: 1 800 000 000 / 3600 = 500 000


def lat(v1: np.ndarray, v2: np.ndarray) -> dict[str, np.ndarray]:
    return {"v1": np.asarray(v1, float), "v2": np.asarray(v2, float)}


def test_hourly_p95_buckets_by_clock_hour() -> None:
    ts = np.array([T0, T0 + 10, T0 + 3599, T0 + 3600, T0 + 7300])
    v1 = np.array([10, 20, 30, 40, 50], float)
    v2 = np.array([1, np.nan, 3, 4, np.nan])
    hours = hourly_p95(ts, lat(v1, v2))
    assert [h.hour for h in hours] == [T0, T0 + 3600, T0 + 7200]
    assert [h.rounds for h in hours] == [3, 1, 1]
    assert hours[0].v1 == pytest.approx(29.0)  # 20 + 0.9 · (30 − 20)
    assert hours[0].v2 == pytest.approx(2.9)  # 1 + 0.95 · (3 − 1)
    assert hours[2].v2 is None and hourly_p95(np.empty(0), lat([], [])) == []


def test_flat_latency_is_not_drift() -> None:
    rng = np.random.default_rng(3)
    n = 1000
    v1 = rng.normal(100, 5, n)
    v2 = rng.normal(110, 5, n)
    d = drift(T0 + np.arange(n) * 2.5, lat(v1, v2))
    assert d.paired_rounds == n and not d.slowing
    assert abs(d.relative_drift_ms) < 10 and abs(d.v2_p95_drift_ms) < 10
    assert d.v2_p95_drift_ratio == pytest.approx(1, abs=0.1)
    assert len(d.hourly) == 1 and d.note == ""


def test_v2_slowing_after_200_completions_is_caught() -> None:
    # the earlier tool's KV-cache bug: v2 gets 0.2 ms slower per completion, v1 does not
    rng = np.random.default_rng(4)
    n = 1000
    v1 = rng.normal(100, 5, n)
    v2 = rng.normal(100, 5, n) + 0.2 * np.arange(n)
    d = drift(T0 + np.arange(n), lat(v1, v2))
    assert d.slowing and d.relative_drift_ms > 100
    assert d.slope_ms_per_1k == pytest.approx(200, rel=0.1) and d.slope_se < 10
    assert d.v2_p95_drift_ms > 100 and d.v2_p95_drift_ratio > 2


def test_both_slowing_together_is_the_machine_not_v2() -> None:
    rng = np.random.default_rng(5)
    n = 1000
    trend = 0.2 * np.arange(n)
    v1 = rng.normal(100, 5, n) + trend
    v2 = rng.normal(100, 5, n) + trend
    d = drift(T0 + np.arange(n), lat(v1, v2))
    assert d.v2_p95_drift_ms > 100 and not d.slowing and abs(d.relative_drift_ms) < 15


def test_too_few_rounds() -> None:
    d = drift(T0 + np.arange(300.0), lat(np.ones(300), np.ones(300)))
    assert d.relative_drift_ms is None and d.v2_p95_drift_ms is None and not d.slowing
    assert "needs 400" in d.note
    assert drift(np.empty(0), lat([], [])).hourly == []


def test_unreachable_rounds_are_skipped() -> None:
    n = 600
    v1 = np.full(n, 100.0)
    v2 = np.full(n, 100.0)
    v2[::3] = np.nan
    d = drift(T0 + np.arange(n), lat(v1, v2))
    assert d.paired_rounds == 400 and d.relative_drift_ms == 0


def test_slope() -> None:
    b, se = slope(np.arange(100, dtype=float) * 0.5)
    assert b == pytest.approx(500) and se == pytest.approx(0, abs=1e-9)
    assert slope(np.array([1.0, 2.0])) == (None, None)


def test_tracker_agrees_with_batch() -> None:
    rng = np.random.default_rng(6)
    n = 800
    v1 = rng.normal(100, 5, n)
    v2 = rng.normal(100, 5, n) + 0.3 * np.arange(n)
    tracker = DriftTracker()
    for i in range(n):
        tracker.add(float(v1[i]), float(v2[i]))
        if i < 399:
            assert tracker.relative_drift_ms() is None
    tracker.add(None, 5.0)  # an unreachable side is skipped
    batch = drift(T0 + np.arange(n), lat(v1, v2))
    assert tracker.relative_drift_ms() == pytest.approx(batch.relative_drift_ms, abs=1e-3)
    assert tracker.slowing() and tracker.count == n


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5),
                          st.one_of(st.floats(0, 1e4, allow_nan=False), st.just(math.nan))),
                max_size=80))
def test_group_p95_equals_a_plain_percentile_per_group(rows: list[tuple[int, float]]) -> None:
    groups = np.array([g for g, _ in rows], dtype=np.int64)
    values = np.array([v for _, v in rows], dtype=np.float64)
    keys = np.unique(groups)
    for key, got in zip(keys, group_p95(groups, values, keys), strict=True):
        vals = values[(groups == key) & ~np.isnan(values)]
        if vals.size == 0:
            assert got is None
        else:
            assert got == pytest.approx(linear_percentile(vals.tolist(), 95), rel=1e-9,
                                        abs=1e-9)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5 * 3600),
                          st.one_of(st.floats(0, 1e4, allow_nan=False), st.just(math.nan))),
                max_size=120), st.booleans())
def test_hourly_p95_in_log_order_equals_np_percentile(rows: list[tuple[int, float]],
                                                      in_order: bool) -> None:
    # a log's timestamps ascend (the fast path: no sort); shuffled ones take the sort
    if in_order:
        rows = sorted(rows, key=lambda r: r[0])
    ts = T0 + np.array([t for t, _ in rows], dtype=np.float64)
    v1 = np.array([v for _, v in rows], dtype=np.float64)
    v2 = v1[::-1].copy()
    hours = np.floor(ts / 3600.0)
    want = []
    for key in np.unique(hours):
        sel = hours == key
        p = [np.percentile(v[sel & ~np.isnan(v)], 95) if (sel & ~np.isnan(v)).any() else None
             for v in (v1, v2)]
        want.append((key * 3600.0, int(sel.sum()),
                     *(None if x is None else round(float(x), 3) for x in p)))
    got = [(h.hour, h.rounds, h.v1, h.v2) for h in hourly_p95(ts, {"v1": v1, "v2": v2})]
    assert got == want


@settings(max_examples=300, deadline=None)
@given(st.lists(st.booleans(), max_size=300), st.integers(0, 40))
def test_first_and_last_n_selected_values(mask_list: list[bool], n: int) -> None:
    from shadow_burnin.core.drift import _first_n, _last_n

    mask = np.array(mask_list, dtype=bool)
    values = np.arange(mask.size, dtype=np.float64)
    assert _first_n(values, mask, n).tolist() == values[mask][:n].tolist()
    assert _last_n(values, mask, n).tolist() == values[mask][-n:].tolist()


def group_p95_loop(groups: np.ndarray, values: np.ndarray, keys: np.ndarray
                   ) -> list[float | None]:
    """The reference the 2-D form must equal bit for bit: numpy's own percentile, one
    group at a time (NaN skipped; None for a group without a value)."""
    out: list[float | None] = []
    for key in keys.tolist():
        v = values[(groups == key) & ~np.isnan(values)]
        out.append(float(np.percentile(v, 95)) if v.size else None)
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 6), st.integers(1, 30)), max_size=12),
       st.lists(st.one_of(st.floats(allow_nan=False, width=64), st.just(math.nan),
                          st.integers(0, 5).map(float)), min_size=1, max_size=60),
       st.sampled_from(["runs", "shuffled", "subset", "extra"]))
def test_group_p95_equals_the_per_group_loop_bit_for_bit(
        sizes: list[tuple[int, int]], pool: list[float], shape: str) -> None:
    # groups of repeated sizes (many hours with the same count: the 2-D path)
    groups_l: list[int] = []
    for key, (reps, size) in enumerate(sizes):
        for r in range(reps):
            groups_l += [key * 10 + r] * size
    groups = np.array(groups_l, dtype=np.int64)
    values = np.resize(np.array(pool), groups.size) if groups.size else np.zeros(0)
    if shape == "shuffled":
        perm = np.random.default_rng(len(groups_l)).permutation(groups.size)
        groups, values = groups[perm], values[perm]
    keys = np.unique(groups)
    if shape == "subset":
        keys = keys[::2]
    elif shape == "extra":
        keys = np.union1d(keys, [-5, 3, 999])
    want = group_p95_loop(groups, values.copy(), keys)
    got = group_p95(groups, values.copy(), keys)
    assert len(got) == len(want)
    for x, y in zip(got, want, strict=True):
        assert (x is None and y is None) or x == y or (math.isnan(x) and math.isnan(y))
