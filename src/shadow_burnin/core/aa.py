"""The A/A noise floor: how often v1 disagrees with itself, beside how often v1 and v2 do.

An A/A record (``"kind": "aa"``) is one prompt sent twice to v1 (or to v1 and a second
copy ``v1b``). Figures:

- ``aa_exact_rate`` = exact / A/A records where both requests got a reply (Wilson 95 %);
- ``ab_minus_aa`` = A/B exact rate − A/A exact rate, with Newcombe's hybrid-score 95 %
  interval for a difference of two independent proportions (built from the two Wilson
  intervals; good coverage for rates near 0 or 1 and small samples). An interval that
  holds 0 means the A/B disagreements are within v1's own noise;
- ``swing_p99``: the 99th percentile of the token swing over A/A no-match records, which
  ``--calibrate`` uses as the near-tie threshold: τ_tie = max(default, p99).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .stats import wilson


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


def calibrated_tau_tie(default: float, swings: Iterable[float]) -> float:
    """max(default, p99 of the finite A/A swings); the default when there are none."""
    values = np.array([s for s in swings if s is not None and math.isfinite(s)],
                      dtype=np.float64)
    if values.size == 0:
        return default
    return max(default, float(np.percentile(values, 99)))


def aa_swings(records: Iterable[dict[str, Any]]) -> list[float]:
    """The swings recorded in A/A records (no-match ones with a computable swing)."""
    out: list[float] = []
    for r in records:
        fx = r.get("forensics")
        if r.get("kind") == "aa" and isinstance(fx, dict) and isinstance(
                fx.get("swing"), int | float):
            out.append(float(fx["swing"]))
    return out


@dataclass
class AASummary:
    records: int
    parity: int
    exact: int
    aa_exact_rate: float | None
    aa_exact_ci95: tuple[float, float] | None
    ab_exact_rate: float | None
    ab_minus_aa: float | None
    ab_minus_aa_ci95: tuple[float, float] | None
    verdicts: dict[str, int]
    swing_p99: float | None

    def to_json(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        for key in ("aa_exact_ci95", "ab_minus_aa_ci95"):
            out[key] = list(out[key]) if out[key] else None
        return out


_PARITY = ("exact", "prefix-only", "no-match")


def summarise_aa(records: Iterable[dict[str, Any]], ab_exact: int, ab_parity: int
                 ) -> AASummary:
    """The A/A figures from the log's ``kind: aa`` records beside the A/B counts."""
    total = parity = exact = 0
    verdicts: dict[str, int] = {}
    swings: list[float] = []
    for r in records:
        if r.get("kind") != "aa":
            continue
        total += 1
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
            if isinstance(fx.get("swing"), int | float):
                swings.append(float(fx["swing"]))
    diff = newcombe_diff(ab_exact, ab_parity, exact, parity)
    return AASummary(
        records=total, parity=parity, exact=exact,
        aa_exact_rate=exact / parity if parity else None,
        aa_exact_ci95=wilson(exact, parity),
        ab_exact_rate=ab_exact / ab_parity if ab_parity else None,
        ab_minus_aa=diff[0] if diff else None,
        ab_minus_aa_ci95=diff[1] if diff else None,
        verdicts=dict(sorted(verdicts.items())),
        swing_p99=round(float(np.percentile(swings, 99)), 6) if swings else None,
    )
