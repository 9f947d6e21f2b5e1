"""``bench --by source``: the same summary, one per origin of the rounds.

A round's source is its ``source`` field: ``mirror`` (real traffic), ``legacy`` (imported
from the earlier tool) or none, shown as ``run`` (the burn-in's own prompts).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shadow_burnin.core.columns import ColumnBuilder
from shadow_burnin.core.stats import Summary, summarise
from shadow_burnin.errors import LogError
from shadow_burnin.io.log.logread import Window, iter_records
from shadow_burnin.io.log.logset import segments

_BATCH = 10_000  # records held per source before they are folded into columns


def summaries_by_source(log: Path | Sequence[Path], window: Window | None = None
                        ) -> dict[str, Summary]:
    """One ``Summary`` per source, sources in order of first appearance (several logs:
    their rounds pooled; a rotated log: all its segments)."""
    logs = [log] if isinstance(log, Path) else list(log)
    for one in logs:
        if not one.exists():
            raise LogError(one, "no such log file (run `shadow-burnin run` first, or pass "
                           "--log)")
    builders: dict[str, ColumnBuilder] = {}
    held: dict[str, list[dict[str, Any]]] = {}
    records = (r for one in logs for p in segments(one) for r in iter_records(p, window))
    for _number, _t, record in records:
        if record.get("kind", "round") != "round":
            continue
        source = str(record.get("source") or "run")
        batch = held.setdefault(source, [])
        batch.append(record)
        if len(batch) >= _BATCH:
            builders.setdefault(source, ColumnBuilder()).add_all(batch)
            held[source] = []
    for source, batch in held.items():
        builders.setdefault(source, ColumnBuilder()).add_all(batch)
    return {source: summarise(b.build()) for source, b in builders.items()}
