"""``divergences``: the non-exact rounds of a log as rows (with their verdicts), filtered."""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

from shadow_burnin.app.files import require_log
from shadow_burnin.io.log.logread import Window, iter_records
from shadow_burnin.io.log.logset import segments
from shadow_burnin.io.run.forensics import NON_EXACT
from shadow_burnin.render.divergences import row

FILTERS = ("near-tie", "regression", "unexplained", "length", "stop")


def divergence_rows(log: str | Path, window: Window | None = None, *,
                    verdict: str | None = None, category: str | None = None,
                    limit: int | None = None) -> list[dict[str, Any]]:
    """One row per non-exact round in the window (the last ``limit`` of them)."""
    rows: deque[dict[str, Any]] = deque(maxlen=limit)
    records = (r for p in segments(require_log(log)) for r in iter_records(p, window))
    for _n, _t, record in records:
        if record.get("kind", "round") != "round" or record.get("bucket") not in NON_EXACT:
            continue
        if category is not None and record.get("category") != category:
            continue
        r = row(record)
        if verdict is not None and r["verdict"] != verdict:
            continue
        rows.append(r)
    return list(rows)
