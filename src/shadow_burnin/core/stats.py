"""Statistics over a log: pure functions from columns to a ``Summary``.

``summarise`` turns columns (``core.columns``: one row per round, no texts) into
figures. Definitions:

- ``exact_match_rate`` = exact / parity rounds (rounds where both sides replied), with a
  Wilson 95 % interval;
- ``unreachable_rate[side]`` = (side-unreachable + both-unreachable) / rounds;
- latency percentiles per side over the rounds where that side replied (linear
  interpolation between order statistics); ``p95_gap_ms`` = p95(v2) − p95(v1);
- ``median_prefix_match_chars`` over parity rounds that were not exact;
- ``unreachable_errors[side]``: that side's unreachable rounds by error code
  (``core.columns.unreachable_errors``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np

from shadow_burnin.core.columns import NOMATCH, PREFIX, Columns, unreachable_errors
from shadow_burnin.core.records import BUCKETS, SIDES


def wilson(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float] | None:
    """Wilson score interval for a binomial proportion; None when n == 0."""
    if n <= 0:
        return None
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (round(max(0.0, centre - half), 9), round(min(1.0, centre + half), 9))


def lerp(a: float, b: float, t: float) -> float:
    """``np.percentile``'s linear interpolation between two order statistics, the same
    arithmetic (from the nearer end), so the figures are the same to the last bit."""
    d = b - a
    return b - d * (1 - t) if t >= 0.5 else a + d * t


def _mixed_zeros(values: np.ndarray) -> bool:
    """True when ``values`` holds both 0.0 and -0.0 (equal to a partition, not in print)."""
    zeros = values[values == 0]
    return bool(zeros.size) and 0 < int(np.count_nonzero(np.signbit(zeros))) < zeros.size


def quantiles_inplace(values: np.ndarray, qs: Sequence[float], n: int | None = None
                      ) -> list[float]:
    """``np.percentile(values, qs)`` (linear; ``values`` non-empty), computed by
    partitioning ``values`` in place: one single-position partition per quantile, each
    over the part above the previous one, and the next order statistic as a minimum.
    (numpy's partition at several positions at once is many times slower than this.)
    ``n``: how many of ``values`` are not NaN, when some are: numpy's partition orders NaN
    after every number, so the quantiles of the numbers are read below position ``n``
    without first copying them out."""
    size = values.size
    n = size if n is None else n
    if _mixed_zeros(values):  # which zero numpy's partition leaves where decides the sign
        finite = values if n == size else values[~np.isnan(values)]
        return [float(x) for x in np.percentile(finite, list(qs), overwrite_input=True)]
    # the least value of a part (NaN skipped: the part may hold the NaNs ordered last)
    least = np.minimum.reduce if n == size else np.fmin.reduce
    lows = []
    for q in qs:
        pos = (n - 1) * (q / 100)
        lo = math.floor(pos)
        lows.append((lo, pos - lo))
    stats: dict[int, float] = {}
    base, rest = 0, values
    for lo in sorted({lo for lo, _ in lows}):
        rest.partition(lo - base)
        stats[lo] = float(rest[lo - base])
        rest, base = rest[lo - base + 1:], lo + 1
    out = []
    for lo, t in lows:
        a = stats[lo]
        if lo + 1 >= n:  # the last order statistic: nothing above it
            out.append(lerp(a, a, t))  # (what numpy does: NaN for an infinite a)
            continue
        if lo + 1 not in stats:  # the smallest value above position lo
            stats[lo + 1] = float(least(values[lo + 1:]))
        out.append(lerp(a, stats[lo + 1], t))
    return out


def median_inplace(values: np.ndarray) -> float:
    """``float(np.median(values))`` (``values`` non-empty; partitioned in place): the
    middle order statistic, or the mean of the two middle ones; NaN when any is NaN."""
    n = values.size
    if np.isnan(values).any():
        return math.nan
    if _mixed_zeros(values):
        return float(np.median(values))
    mid = (n - 1) // 2
    values.partition(mid)
    a = float(values[mid])
    # np.mean's sum starts from 0.0 (so -0.0 comes out as 0.0)
    return (0.0 + a) / 1 if n % 2 else (0.0 + a + float(values[mid + 1:].min())) / 2


def percentiles(values: np.ndarray, qs: tuple[int, ...] = (50, 95, 99)) -> dict[str, float] | None:
    """Percentiles of the non-NaN values (``p50`` …), None when there are none."""
    missing = int(np.count_nonzero(np.isnan(values)))
    if missing == values.size:
        return None
    # a copy, partitioned in place below, NaNs and all (a plain copy is several times
    # cheaper than selecting the numbers out)
    got = quantiles_inplace(values.copy(), qs, values.size - missing)
    return {f"p{q}": round(v, 3) for q, v in zip(qs, got, strict=True)}


class Summary(msgspec.Struct):
    rounds: int
    parity_rounds: int
    counts: dict[str, int]
    exact_match_rate: float | None
    exact_match_ci95: tuple[float, float] | None
    unreachable_rate: dict[str, float | None]
    latency_ms: dict[str, dict[str, float] | None]
    ttft_ms: dict[str, dict[str, float] | None]
    p95_gap_ms: float | None
    median_prefix_match_chars: float | None
    by_category: dict[str, dict[str, Any]]
    top_divergent_prompts: list[dict[str, Any]]
    first_ts: float | None = None
    last_ts: float | None = None
    notes: list[str] = msgspec.field(default_factory=list)
    forensics: dict[str, Any] | None = None  # core.breakdown.forensics_summary
    aa: dict[str, Any] | None = None  # core.aa.summarise_aa
    # per side: unreachable rounds by error code (core.columns.unreachable_errors)
    unreachable_errors: dict[str, dict[str, int]] = msgspec.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in msgspec.structs.asdict(self).items()
               if k not in ("first_ts", "last_ts")}
        out["exact_match_ci95"] = list(self.exact_match_ci95) if self.exact_match_ci95 else None
        return out


def _rate(num: int, den: int) -> float | None:
    return num / den if den else None


def summarise(cols: Columns, top: int = 10) -> Summary:
    """All of ``bench``'s figures from the columns."""
    n = len(cols)
    # one comparison per bucket (the codes are int8: bincount would first copy them to
    # int64); bincount as before when a code is outside the buckets
    counts_arr = np.array([np.count_nonzero(cols.bucket == i) for i in range(len(BUCKETS))],
                          dtype=np.int64)
    if int(counts_arr.sum()) != n:
        counts_arr = np.bincount(cols.bucket.astype(np.int64), minlength=len(BUCKETS))
    counts = {b: int(counts_arr[i]) for i, b in enumerate(BUCKETS)}
    parity = counts["exact"] + counts["prefix-only"] + counts["no-match"]
    both = counts["both-unreachable"]
    lat = {s: percentiles(cols.latency[s]) for s in SIDES}
    gap = None
    if lat["v1"] and lat["v2"]:
        gap = round(lat["v2"]["p95"] - lat["v1"]["p95"], 3)
    non_exact = (cols.bucket == PREFIX) | (cols.bucket == NOMATCH)
    med_prefix = median_inplace(cols.prefix[non_exact]) if non_exact.any() else None
    return Summary(
        rounds=n,
        parity_rounds=parity,
        counts=counts,
        exact_match_rate=_rate(counts["exact"], parity),
        exact_match_ci95=wilson(counts["exact"], parity),
        unreachable_rate={
            "v1": _rate(counts["v1-unreachable"] + both, n),
            "v2": _rate(counts["v2-unreachable"] + both, n),
        },
        latency_ms=lat,
        ttft_ms={s: percentiles(cols.ttft[s]) for s in SIDES},
        p95_gap_ms=gap,
        median_prefix_match_chars=med_prefix,
        by_category=_by_category(cols),
        top_divergent_prompts=_top_divergent(cols, non_exact, top),
        first_ts=float(cols.ts.min()) if n else None,
        last_ts=float(cols.ts.max()) if n else None,
        unreachable_errors=unreachable_errors(cols),
    )


def _by_category(cols: Columns) -> dict[str, dict[str, Any]]:
    ncat = len(cols.categories)
    if not ncat:
        return {}
    # one bincount over (category, bucket) pairs: the counts np.add.at gave, without its
    # per-element dispatch
    pair = cols.category.astype(np.int64) * len(BUCKETS) + cols.bucket
    table = np.bincount(pair, minlength=ncat * len(BUCKETS)).reshape(ncat, len(BUCKETS))
    out: dict[str, dict[str, Any]] = {}
    for i in sorted(range(ncat), key=lambda j: cols.categories[j]):
        row = {b: int(table[i, j]) for j, b in enumerate(BUCKETS)}
        parity = row["exact"] + row["prefix-only"] + row["no-match"]
        out[cols.categories[i]] = {
            "rounds": int(table[i].sum()),
            "parity_rounds": parity,
            "counts": row,
            "exact_match_rate": _rate(row["exact"], parity),
        }
    return out


def _top_divergent(cols: Columns, non_exact: np.ndarray, top: int) -> list[dict[str, Any]]:
    if not non_exact.any():
        return []
    parity_mask = cols.bucket <= NOMATCH
    div = np.bincount(cols.prompt[non_exact], minlength=len(cols.prompts))
    par = np.bincount(cols.prompt[parity_mask], minlength=len(cols.prompts))
    order = sorted(np.nonzero(div)[0], key=lambda i: (-int(div[i]), cols.prompts[i]))[:top]
    cat_of = cols.category_of(order)
    return [
        {"prompt_id": cols.prompts[i], "category": cols.categories[cat_of[int(i)]],
         "divergent": int(div[i]), "parity_rounds": int(par[i])}
        for i in order
    ]
