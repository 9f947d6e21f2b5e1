"""``divergences``: the non-exact rounds of a log as rows (with their verdicts), filtered."""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from shadow_burnin.app.files import require_log
from shadow_burnin.core.records import BUCKETS
from shadow_burnin.io.log.logread import Window, indexed, iter_records, read_rows, window_mask
from shadow_burnin.io.log.logset import segments
from shadow_burnin.io.run.forensics import NON_EXACT
from shadow_burnin.render.divergences import row

if TYPE_CHECKING:
    from shadow_burnin.io.log.index import Index

FILTERS = ("near-tie", "regression", "unexplained", "length", "stop")


def divergence_rows(log: str | Path, window: Window | None = None, *,
                    verdict: str | None = None, category: str | None = None,
                    limit: int | None = None) -> list[dict[str, Any]]:
    """One row per non-exact round in the window (the last ``limit`` of them), across
    the log's rotated segments (newest segment first until ``limit`` rows are found)."""
    out: list[dict[str, Any]] = []
    for path in reversed(segments(require_log(log))):
        want = None if limit is None else limit - len(out)
        if want is not None and want <= 0:
            break
        out[:0] = _segment_rows(path, window, verdict, category, want)
    return out


def _segment_rows(path: Path, window: Window | None, verdict: str | None,
                  category: str | None, limit: int | None) -> list[dict[str, Any]]:
    idx = indexed(path)
    if idx is not None:
        return _rows_by_offset(path, idx, window, verdict, category, limit)
    rows: deque[dict[str, Any]] = deque(maxlen=limit)
    for _n, _t, record in iter_records(path, window):
        if record.get("kind", "round") != "round" or record.get("bucket") not in NON_EXACT:
            continue
        if category is not None and record.get("category") != category:
            continue
        r = row(record)
        if verdict is not None and r["verdict"] != verdict:
            continue
        rows.append(r)
    return list(rows)


def _rows_by_offset(path: Path, idx: Index, window: Window | None, verdict: str | None,
                    category: str | None, limit: int | None) -> list[dict[str, Any]]:
    """The same rows, picked on the index's columns and read at their offsets: newest
    first until ``limit`` pass the verdict filter (only those lines are read)."""
    cols = idx.columns
    mask = np.isin(cols.bucket, [BUCKETS.index(b) for b in NON_EXACT])
    if window is not None:
        mask &= window_mask(cols.ts, window)
    if category is not None:
        code = cols.categories.index(category) if category in cols.categories else -1
        mask &= cols.category == code
    picked = np.flatnonzero(mask)[::-1].tolist()
    out: list[dict[str, Any]] = []
    for record in read_rows(path, idx, picked):
        if limit is not None and len(out) >= limit:
            break
        if category is not None and record.get("category") != category:
            continue
        r = row(record)
        if verdict is None or r["verdict"] == verdict:
            out.append(r)
    return out[::-1]
