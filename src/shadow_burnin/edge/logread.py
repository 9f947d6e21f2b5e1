"""Reading a log for reports: streaming, filtered by time, into columns or records.

The log is read line by line (never whole into memory). Records are filtered by their
round start time (``ts``), compared as times, not strings. Non-round records (events,
A/A records) are passed to the caller separately.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from ..core.records import BUCKETS, SCHEMA
from ..core.stats import ColumnBuilder, Columns
from ..errors import LogError
from . import legacy


def parse_time(text: str, what: str = "time") -> datetime:
    """ISO-8601 (``Z`` or offset; naive means UTC) → aware datetime; ValueError if bad."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{what}: not an ISO-8601 time: {text!r}") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


@dataclass(frozen=True)
class Window:
    """A half-open time window [since, until) in epoch seconds (None: unbounded)."""

    since: float | None = None
    until: float | None = None

    def contains(self, t: float) -> bool:
        return (self.since is None or t >= self.since) and (self.until is None or t < self.until)


@dataclass
class LogScan:
    columns: Columns
    other: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _ts(path: Path, number: int, record: dict[str, Any]) -> float:
    try:
        return datetime.fromisoformat(record["ts"]).timestamp()
    except (KeyError, TypeError, ValueError):
        raise LogError(path, "record has no valid 'ts'", line=number) from None


def open_log(path: Path) -> Any:
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise LogError(path, "no such log file") from None
    except IsADirectoryError:
        raise LogError(path, "is a directory, not a log file") from None
    except PermissionError:
        raise LogError(path, "permission denied") from None


def iter_records(path: Path, window: Window | None = None
                 ) -> Iterator[tuple[int, float, dict[str, Any]]]:
    """Yield ``(line, ts_epoch, record)`` for every record in the window.

    Raises LogError for a line that is not JSON, a record without ``ts``, or a record that
    is not ours. A legacy log (the earlier bash tool's) is converted on the fly by
    ``shadow_burnin.edge.legacy`` (records marked ``source: legacy``).
    """
    if legacy.is_legacy_log(path):
        for number, _line, record in legacy.iter_legacy(path):
            t = _ts(path, number, record)
            if window is None or window.contains(t):
                yield number, t, record
        return
    with open_log(path) as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            if not line.endswith(b"\n"):
                break  # a torn last line (a run in progress or a crash): not a round yet
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                raise LogError(path, "line is not JSON", line=number) from None
            if not isinstance(record, dict):
                raise LogError(path, "line is not a JSON object", line=number)
            if record.get("kind", "round") == "round" and (
                record.get("schema") != SCHEMA or record.get("bucket") not in BUCKETS
            ):
                raise LogError(path, "not a shadow-burnin round record", line=number)
            t = _ts(path, number, record)
            if window is None or window.contains(t):
                yield number, t, record


def scan(path: Path, window: Window | None = None) -> LogScan:
    """One streaming pass: round records into columns, other records kept aside."""
    builder = ColumnBuilder()
    other: list[dict[str, Any]] = []
    imported = 0
    for _number, t, record in iter_records(path, window):
        if record.get("kind", "round") == "round":
            builder.add(record, t)
            imported += record.get("source") == "legacy"
        else:
            other.append(record)
    notes: list[str] = []
    if legacy.is_legacy_log(path):
        notes.append(legacy.NOTE)
    elif imported:
        notes.append(f"{imported} round(s) imported from the earlier bash tool: their texts "
                     "hold only the first line of each reply")
    return LogScan(columns=builder.build(), other=other, notes=notes)


def last_rounds(path: Path, n: int) -> list[dict[str, Any]]:
    """The last ``n`` round records (streaming; keeps at most ``n`` in memory)."""
    from collections import deque

    keep: deque[dict[str, Any]] = deque(maxlen=n)
    for _number, _t, record in iter_records(path):
        if record.get("kind", "round") == "round":
            keep.append(record)
    return list(keep)


def find_round(path: Path, number: int) -> dict[str, Any] | None:
    for _line, _t, record in iter_records(path):
        if record.get("kind", "round") == "round" and record.get("round") == number:
            return record
    return None
