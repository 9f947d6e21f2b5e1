"""Independent references for the statistics tests (written out by hand, not numpy)."""

from __future__ import annotations

import math
from collections.abc import Iterable


def linear_percentile(values: Iterable[float], q: float) -> float:
    """The q-th percentile (0–100) by linear interpolation between closest ranks (the
    definition numpy calls "linear", Hyndman & Fan type 7), in plain Python."""
    xs = sorted(values)
    if not xs:
        raise ValueError("no values")
    rank = q / 100 * (len(xs) - 1)
    lo = math.floor(rank)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (rank - lo) * (xs[hi] - xs[lo])
