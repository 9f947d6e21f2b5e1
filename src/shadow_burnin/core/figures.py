"""The figures the gates judge, made from the log's columns, its events and the latest
``ppl`` run (pure; the bootstrap takes a seeded ``numpy`` Generator).

Every figure carries the number of rounds (or tokens) behind it and the log time of its
newest data, so a re-run on the same files gives the same table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from shadow_burnin.core.columns import Columns
from shadow_burnin.core.drift import Drift
from shadow_burnin.core.gates import Figure
from shadow_burnin.core.halt import HaltStatus, epoch
from shadow_burnin.core.stats import Summary

BOOTSTRAP_BUDGET = 50_000_000  # resamples × rounds: keeps the bootstrap to about a second


def bootstrap_p95_gap(v1: np.ndarray, v2: np.ndarray, rng: np.random.Generator,
                      samples: int = 1000) -> tuple[float, float] | None:
    """95 % paired bootstrap interval of p95(v2) − p95(v1).

    Resamples whole rounds (pairs) with replacement, over the rounds where both sides
    replied. With many rounds the number of resamples is reduced to keep the cost
    bounded (never below 200). None with fewer than 20 pairs.
    """
    both = ~np.isnan(v1) & ~np.isnan(v2)
    a, b = v1[both], v2[both]
    n = a.size
    if n < 20:
        return None
    samples = max(200, min(samples, BOOTSTRAP_BUDGET // n))
    diffs = np.empty(samples)
    for i in range(samples):
        idx = rng.integers(0, n, size=n)
        diffs[i] = np.percentile(b[idx], 95) - np.percentile(a[idx], 95)
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return round(float(lo), 3), round(float(hi), 3)


def log_figures(summary: Summary, cols: Columns, *, statistical: bool = False,
                rng: np.random.Generator | None = None, bootstrap: int = 1000
                ) -> dict[str, Figure]:
    """Figures from the rounds: counts, rates, latency, prefix match, wall time."""
    s = summary
    as_of = s.last_ts
    wall = (s.last_ts - s.first_ts) / 3600.0 \
        if s.first_ts is not None and s.last_ts is not None else None
    ci = s.exact_match_ci95
    gap_interval = None
    if statistical and s.p95_gap_ms is not None:
        gap_interval = bootstrap_p95_gap(cols.latency["v1"], cols.latency["v2"],
                                         rng or np.random.default_rng(0), bootstrap)
    replied = {side: int(np.count_nonzero(~np.isnan(cols.latency[side]))) for side in
               ("v1", "v2")}
    non_exact = s.counts["prefix-only"] + s.counts["no-match"]
    out = {
        "rounds": Figure(float(s.rounds), s.rounds, as_of, grows=True),
        "parity_rounds": Figure(float(s.parity_rounds), s.parity_rounds, as_of, grows=True),
        "wall_time_h": Figure(wall, s.rounds, as_of, grows=True),
        "exact_match_rate": Figure(s.exact_match_rate, s.parity_rounds, as_of,
                                   interval=(ci[0], ci[1]) if statistical and ci else None),
        "v1_unreachable_rate": Figure(s.unreachable_rate["v1"], s.rounds, as_of),
        "v2_unreachable_rate": Figure(s.unreachable_rate["v2"], s.rounds, as_of),
        "p95_gap_ms": Figure(s.p95_gap_ms, min(replied.values()), as_of,
                             interval=gap_interval),
        "median_prefix_match_chars": Figure(
            s.median_prefix_match_chars, non_exact, as_of,
            note="" if non_exact else "no non-exact rounds"),
    }
    return out


def halt_figures(status: HaltStatus) -> dict[str, Figure]:
    halt = status.halt if status.active else None
    note = ""
    if halt:
        w = halt.get("window", {})
        note = (f"halt at round {halt.get('round')} ({halt.get('ts')}): no-match "
                f"{w.get('no_match')}/{w.get('parity_rounds')} in the window")
    as_of = epoch(halt["ts"]) if halt else None
    return {"active_halt": Figure(1.0 if status.active else 0.0, status.halts, as_of,
                                  note=note)}


def ppl_figures(run: Mapping[str, Any] | None) -> dict[str, Figure]:
    """Figures from the latest ``ppl`` record (None: no run yet: no data)."""
    if not run:
        return {}
    as_of = epoch(run["ts"]) if run.get("ts") else None
    v1, v2 = run.get("v1") or {}, run.get("v2") or {}
    base = v1.get("ppl")
    pair = run.get("paired") or {}
    tokens = int(pair.get("positions") or 0)

    def fig(value: Any, samples: int, **kw: Any) -> Figure:
        ok = isinstance(value, int | float) and math.isfinite(value)
        return Figure(float(value) if ok else None, samples, as_of, **kw)

    return {
        "ppl_v1": fig(base, int(v1.get("tokens") or 0)),
        "ppl_v2": fig(v2.get("ppl"), int(v2.get("tokens") or 0), baseline=base),
        "mean_nll_diff": fig(pair.get("nll_diff_mean"), tokens),
        "kld_mean": fig(pair.get("kld_mean"), tokens),
        "same_top1_rate": fig(pair.get("same_top1_rate"), tokens),
        "rms_dp": fig(pair.get("rms_dp"), tokens),
    }


def drift_figures(d: Drift | None, as_of: float | None) -> dict[str, Figure]:
    if d is None:
        return {}
    return {
        "v2_p95_drift_ms": Figure(d.v2_p95_drift_ms, d.n * 2, as_of, note=d.note),
        "v2_p95_drift_ratio": Figure(d.v2_p95_drift_ratio, d.n * 2, as_of, note=d.note),
        "relative_drift_ms": Figure(d.relative_drift_ms, d.paired_rounds, as_of,
                                    note=d.note),
    }
