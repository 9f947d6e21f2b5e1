"""Latency drift (pure): does v2 slow down as completions accumulate?

The earlier tool found a KV-cache bug by asking "does the new server slow down after 200
completions?". Three views, all from the log's columns:

- ``hourly``: p95 latency per side for every hour of the log (log timestamps);
- ``v2_p95_drift_ms`` / ``_ratio``: v2's p95 over its last N replies vs its first N;
- ``relative_drift_ms``: the p95 gap (v2 − v1) over the last N paired rounds minus over
  the first N — v1 is the control: both slowing together is the machine, v2 alone is v2.
  With it the least-squares slope of the paired difference (v2 − v1 latency) against the
  completion count, per 1 000 completions, with its standard error.

``slowing`` is true when the relative drift is above ``tolerance_ms`` (default: the
larger of 10 ms and 10 % of v2's first-N p95) and the slope is positive with t > 3.
``DriftTracker`` answers the same question incrementally for the runner.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import msgspec
import numpy as np

from shadow_burnin.core.stats import quantiles_inplace

DRIFT_N = 200


class HourP95(msgspec.Struct, frozen=True):
    hour: float  # epoch seconds of the hour's start
    rounds: int
    v1: float | None
    v2: float | None


class Drift(msgspec.Struct, frozen=True):
    n: int = DRIFT_N
    paired_rounds: int = 0
    v2_first_p95: float | None = None
    v2_last_p95: float | None = None
    v2_p95_drift_ms: float | None = None
    v2_p95_drift_ratio: float | None = None
    gap_first_p95: float | None = None
    gap_last_p95: float | None = None
    relative_drift_ms: float | None = None
    slope_ms_per_1k: float | None = None
    slope_se: float | None = None
    slowing: bool = False
    hourly: list[HourP95] = msgspec.field(default_factory=list)
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        # what asdict gave (same keys, same order), without its deep copy of every hour
        # (700 of them on 1M rounds)
        out = msgspec.structs.asdict(self)
        out["hourly"] = [{"hour": h.hour, "rounds": h.rounds, "v1": h.v1, "v2": h.v2}
                         for h in self.hourly]
        return out


def _p95(values: np.ndarray) -> float | None:
    return quantiles_inplace(values.copy(), (95,))[0] if values.size else None


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, digits)


def hourly_p95(ts: np.ndarray, latency: dict[str, np.ndarray]) -> list[HourP95]:
    """p95 per side for each clock hour that has rounds (NaN latencies skipped)."""
    if ts.size == 0:
        return []
    scaled = ts / 3600.0
    hours = np.floor(scaled, out=scaled).astype(np.int64)  # floor in place: one array fewer
    del scaled
    runs: np.ndarray | None = None
    if _ascending(hours):  # a log's rounds: the hours are runs, no sort needed
        # (a bool mask, not a diff)
        runs = np.concatenate(([0], np.flatnonzero(hours[1:] != hours[:-1]) + 1))
        keys = hours[runs]
        counts = np.diff(np.append(runs, hours.size))
    else:
        keys, counts = np.unique(hours, return_counts=True)
    p = {side: group_p95(hours, latency[side], keys, runs) for side in ("v1", "v2")}
    return [HourP95(key * 3600.0, n, _r(a), _r(b))
            for key, n, a, b in zip(keys.tolist(), counts.tolist(), p["v1"], p["v2"],
                                    strict=True)]


def group_p95(groups: np.ndarray, values: np.ndarray, keys: np.ndarray,
              runs: np.ndarray | None = None) -> list[float | None]:
    """The p95 of ``values`` (NaN skipped) per group in ``keys`` (sorted), all groups at
    once: the two order statistics around position 0.95·(n − 1) of each group,
    interpolated linearly; None for a group with no value. ``runs``: the first row of
    each key's group when the caller knows ``groups`` is ascending and ``keys`` are its
    distinct values (then nothing is checked or searched again).

    Groups with the same number of values are partitioned together, as the rows of one
    2-D array (one call for all the hours of a steady run, instead of one per hour); a
    log's groups are runs already, so no sort."""
    nan = np.isnan(values)
    whole = not nan.any()  # every value a number: a plain copy, no selection
    ok = None if whole else ~nan
    if runs is None and _runs_of(groups, keys):
        runs = np.searchsorted(groups, keys, side="left")
    if runs is not None:  # a log's hours: no sort, no copy of the groups
        if ok is None:
            n = np.diff(np.append(runs, values.size))
            v = values.copy()  # partitioned in place below
        else:
            n = np.add.reduceat(ok, runs, dtype=np.int64)
            v = values[ok]  # a copy: partitioned in place below
        first = np.cumsum(n) - n
    else:  # copies: v is partitioned in place below
        g, v = (groups, values.copy()) if ok is None else (groups[ok], values[ok])
        if not _ascending(g):
            order = np.argsort(g, kind="stable")
            g, v = g[order], v[order]
        first = np.searchsorted(g, keys, side="left")
        n = np.searchsorted(g, keys, side="right") - first
    pos = 0.95 * np.maximum(n - 1, 0)
    lo = np.floor(pos).astype(np.int64)
    a = np.zeros(keys.size)
    b = np.zeros(keys.size)
    for count in sorted(set(n.tolist())):  # (np.unique would import numpy.ma: 6 ms)
        if count == 0:
            continue
        rows = np.flatnonzero(n == count)
        k = int(lo[rows[0]])
        start = int(first[rows[0]])
        if rows.size == 1 or bool((np.diff(first[rows]) == count).all()):  # adjacent
            # groups (a steady run of hours): one block where they lie, in place
            block = v[start:start + rows.size * count].reshape(rows.size, count)
        else:
            block = v[first[rows][:, None] + np.arange(count)]
        block.partition(k, axis=1)
        a[rows] = block[:, k]
        # the next order statistic: the least value above position k (none: n = 1)
        b[rows] = block[:, k + 1:].min(axis=1) if k + 1 < count else block[:, k]
    t = pos - lo
    d = b - a  # numpy's linear interpolation, to the last bit (it rounds alike at a tie)
    got = np.where(t >= 0.5, b - d * (1 - t), a + d * t)
    return [x if c else None for x, c in zip(got.tolist(), n.tolist(), strict=True)]


def _first_n(values: np.ndarray, mask: np.ndarray, n: int) -> np.ndarray:
    """``values[mask][:n]`` without selecting the whole array (the prefix that holds n
    selected values is found by doubling)."""
    k = max(n, 1)
    while k < mask.size and int(np.count_nonzero(mask[:k])) < n:
        k *= 2
    return values[:k][mask[:k]][:n]


def _last_n(values: np.ndarray, mask: np.ndarray, n: int) -> np.ndarray:
    """``values[mask][-n:]`` without selecting the whole array."""
    if n <= 0:
        return values[mask][-n:]
    return _first_n(values[::-1], mask[::-1], n)[::-1]


def _runs_of(groups: np.ndarray, keys: np.ndarray) -> bool:
    """True when ``groups`` is ascending and ``keys`` are exactly its distinct values."""
    if not groups.size or not keys.size or not _ascending(groups):
        return False
    left = np.searchsorted(groups, keys, side="left")
    right = np.searchsorted(groups, keys, side="right")
    return bool(left[0] == 0 and right[-1] == groups.size and (right > left).all()
                and (left[1:] == right[:-1]).all())


def _ascending(a: np.ndarray) -> bool:
    return a.size < 2 or not bool((a[1:] < a[:-1]).any())


def slope(diff: np.ndarray) -> tuple[float | None, float | None]:
    """OLS slope of ``diff`` against its index, per 1 000 steps, and its standard error."""
    n = diff.size
    if n < 3:
        return None, None
    xc = np.arange(n, dtype=np.float64)
    xc -= xc.mean()  # in place: the same values as x - x.mean(), one array fewer
    sxx = float(xc @ xc)
    dm = diff - diff.mean()  # once (it was computed twice)
    b = float(xc @ dm) / sxx
    xc *= b
    dm -= xc  # the residuals, in place
    se = math.sqrt(float(dm @ dm) / (n - 2) / sxx)
    return b * 1000.0, se * 1000.0


def drift(ts: np.ndarray, latency: dict[str, np.ndarray], n: int = DRIFT_N,
          tolerance_ms: float | None = None) -> Drift:
    """All drift figures from the columns (rounds in log order)."""
    hourly = hourly_p95(ts, latency)
    v1, v2 = latency["v1"], latency["v2"]
    # no full copies of the replied/paired latencies (10 M rounds: 80 MB each): only
    # their first and last n and the paired difference are used
    ok2 = ~np.isnan(v2)
    paired = ~np.isnan(v1) & ok2
    n_ok2, n_paired = int(np.count_nonzero(ok2)), int(np.count_nonzero(paired))
    fig: dict[str, Any] = {}
    notes = []
    if n_ok2 >= 2 * n:
        first, last = _p95(_first_n(v2, ok2, n)), _p95(_last_n(v2, ok2, n))
        assert first is not None and last is not None
        fig.update(v2_first_p95=_r(first), v2_last_p95=_r(last),
                   v2_p95_drift_ms=_r(last - first),
                   v2_p95_drift_ratio=_r(last / first, 4) if first > 0 else None)
    else:
        notes.append(f"v2 drift needs {2 * n} replies, has {n_ok2}")
    slowing = False
    if n_paired >= 2 * n:
        d2_first, d2_last = _first_n(v2, paired, n), _last_n(v2, paired, n)
        g_first = (_p95(d2_first) or 0.0) - (_p95(_first_n(v1, paired, n)) or 0.0)
        g_last = (_p95(d2_last) or 0.0) - (_p95(_last_n(v1, paired, n)) or 0.0)
        rel = g_last - g_first
        diff = v2 - v1  # NaN where a side did not reply
        if n_paired < diff.size:
            diff = diff[paired]  # v2 − v1 over the paired rounds
        b, se = slope(diff)
        del diff
        tol = tolerance_ms if tolerance_ms is not None else \
            max(10.0, 0.1 * (_p95(d2_first) or 0.0))
        slowing = bool(rel > tol and b is not None and se is not None and b > 0
                       and (se == 0 or b / se > 3))
        fig.update(gap_first_p95=_r(g_first), gap_last_p95=_r(g_last),
                   relative_drift_ms=_r(rel), slope_ms_per_1k=_r(b, 4), slope_se=_r(se, 4))
    else:
        notes.append(f"relative drift needs {2 * n} paired rounds, has {n_paired}")
    return Drift(n=n, paired_rounds=n_paired, slowing=slowing, hourly=hourly,
                 note="; ".join(notes), **fig)


class DriftTracker:
    """Incremental relative drift for the runner: keeps the first N and last N pairs."""

    def __init__(self, n: int = DRIFT_N, tolerance_ms: float | None = None) -> None:
        self.n = n
        self.tolerance_ms = tolerance_ms
        self.first: list[tuple[float, float]] = []
        self.last: deque[tuple[float, float]] = deque(maxlen=n)
        self.count = 0

    def add(self, v1_ms: float | None, v2_ms: float | None) -> None:
        if v1_ms is None or v2_ms is None:
            return
        self.count += 1
        if len(self.first) < self.n:
            self.first.append((v1_ms, v2_ms))
        else:
            self.last.append((v1_ms, v2_ms))

    def relative_drift_ms(self) -> float | None:
        """Gap p95 over the last N − over the first N; None until 2N pairs are seen."""
        if len(self.first) < self.n or len(self.last) < self.n:
            return None
        f = np.array(self.first)
        la = np.array(self.last)
        first_gap = np.percentile(f[:, 1], 95) - np.percentile(f[:, 0], 95)
        last_gap = np.percentile(la[:, 1], 95) - np.percentile(la[:, 0], 95)
        return float(last_gap - first_gap)

    def slowing(self) -> bool:
        rel = self.relative_drift_ms()
        if rel is None:
            return False
        tol = self.tolerance_ms if self.tolerance_ms is not None else \
            max(10.0, 0.1 * float(np.percentile(np.array(self.first)[:, 1], 95)))
        return rel > tol
