"""``bench --by source``: the same summary, one per origin of the rounds.

A round's source is its ``source`` field: ``mirror`` (real traffic), ``legacy`` (imported
from the earlier tool) or none, shown as ``run`` (the burn-in's own prompts).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shadow_burnin.core.columns import ColumnBuilder
from shadow_burnin.core.stats import Summary, summarise
from shadow_burnin.errors import LogError
from shadow_burnin.io.log.logread import Window, iter_records

_BATCH = 10_000  # records held per source before they are folded into columns


def summaries_by_source(log: Path, window: Window | None = None) -> dict[str, Summary]:
    """One ``Summary`` per source, sources in order of first appearance."""
    if not log.exists():
        raise LogError(log, "no such log file (run `shadow-burnin run` first, or pass --log)")
    builders: dict[str, ColumnBuilder] = {}
    held: dict[str, list[dict[str, Any]]] = {}
    for _number, _t, record in iter_records(log, window):
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
