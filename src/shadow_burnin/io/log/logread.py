"""Reading a log: the one API every reader uses, for both layouts.

A log written by this version holds one line per round (an A/A pair inside its round,
key ``"aa"``) and its events in ``<log>.events.jsonl``. Older logs also hold inline
event lines (``"kind": "event"``) and A/A lines (``"kind": "aa"``). The readers here give
one view of both: :func:`iter_records` yields the log's records with each embedded A/A
pair also handed on as a ``"kind": "aa"`` record right after its round;
:func:`log_events` gives every event (inline and from the events file, in time order);
:func:`iter_rounds`, :func:`last_rounds` and :func:`find_round` give rounds only;
:func:`scan` folds rounds into columns with A/A records and events kept aside. Kinds are
told apart in one place (``core.records.record_kind``).

The log is read line by line or in bounded blocks (never whole into memory). Records
are filtered by their round start time (``ts``), compared as times, not strings.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np
import orjson

from shadow_burnin.core.columns import ColumnBuilder, Columns, concat_columns
from shadow_burnin.core.records import BUCKETS, SCHEMA, RecordKind, aa_record, record_kind
from shadow_burnin.core.sidetables import AATable, FlipTable
from shadow_burnin.errors import LogError
from shadow_burnin.io.log import legacy
from shadow_burnin.io.log.events import iter_event_file, read_events
from shadow_burnin.io.log.indexcheck import index_enabled
from shadow_burnin.io.log.lines import decode_line, iter_lines, open_log

if TYPE_CHECKING:
    from shadow_burnin.io.log.index import Index


def parse_time(text: str, what: str = "time") -> datetime:
    """ISO-8601 (``Z`` or offset; naive means UTC) → aware datetime; ValueError if bad."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{what}: not an ISO-8601 time: {text!r}") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


class Window(msgspec.Struct, frozen=True):
    """A half-open time window [since, until) in epoch seconds (None: unbounded)."""

    since: float | None = None
    until: float | None = None

    def contains(self, t: float) -> bool:
        return (self.since is None or t >= self.since) and (self.until is None or t < self.until)


class LogScan(msgspec.Struct):
    """Round records as columns; ``other``: the rest in log order, events whole and A/A
    records without their two replies (``logscan.AA_FIELDS``)."""

    columns: Columns
    other: list[dict[str, Any]] = msgspec.field(default_factory=list)
    notes: list[str] = msgspec.field(default_factory=list)
    # read through the round index: the A/A pairs as a table (then not in ``other``)
    # and the no-match rounds' flips (``core.sidetables``); None: not at hand
    aa: AATable | None = None
    flips: FlipTable | None = None


def _ts(path: Path, number: int, record: dict[str, Any]) -> float:
    try:
        return datetime.fromisoformat(record["ts"]).timestamp()
    except (KeyError, TypeError, ValueError):
        raise LogError(path, "record has no valid 'ts'", line=number) from None


def iter_records(path: Path, window: Window | None = None, *, split_aa: bool = True
                 ) -> Iterator[tuple[int, float, dict[str, Any]]]:
    """Yield ``(line, ts_epoch, record)`` for every record in the window; a round that
    carries an A/A pair is followed by that pair as a ``"kind": "aa"`` record (same
    line number), so both layouts read alike (``split_aa=False``: the lines as they are).

    Raises LogError for a line that is not JSON, a record without ``ts``, or a record that
    is not ours. A legacy log (the earlier bash tool's) is converted on the fly by
    ``shadow_burnin.io.log.legacy`` (records marked ``source: legacy``).
    """
    if legacy.is_legacy_log(path):
        for number, _line, record in legacy.iter_legacy(path):
            t = _ts(path, number, record)
            if window is None or window.contains(t):
                yield number, t, record
        return
    for number, record in iter_lines(path):  # a torn last line is not a round yet
        kind = record_kind(record)
        if kind is RecordKind.ROUND and (
            record.get("schema") != SCHEMA or record.get("bucket") not in BUCKETS
        ):
            raise LogError(path, "not a shadow-burnin round record", line=number)
        t = _ts(path, number, record)
        if window is None or window.contains(t):
            yield number, t, record
            aa = aa_record(record) if split_aa and kind is RecordKind.ROUND else None
            if aa is not None:
                yield number, t, aa


def iter_rounds(path: Path, window: Window | None = None
                ) -> Iterator[tuple[int, float, dict[str, Any]]]:
    """:func:`iter_records`, rounds only."""
    for number, t, record in iter_records(path, window):
        if record_kind(record) is RecordKind.ROUND:
            yield number, t, record


def inline_events(path: Path) -> list[dict[str, Any]]:
    """The event lines an older version wrote into the log itself (a quick pass: only
    lines that mention an event are parsed; a torn last line is skipped)."""
    out = []
    try:
        fh = open(path, "rb")  # noqa: SIM115 (closed below)
    except FileNotFoundError:
        return []
    with fh:
        for line in fh:
            if b'"kind":"event"' in line and line.endswith(b"\n"):
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(record, dict) and record_kind(record) is RecordKind.EVENT:
                    out.append(record)
    return out


def log_events(path: Path) -> list[dict[str, Any]]:
    """Every event of a log, both layouts (inline lines, ``<log>.events.jsonl``), in
    time order."""
    return read_events(path, inline_events(path))


def scan(path: Path, window: Window | None = None, *, use_index: bool | None = None
         ) -> LogScan:
    """Round records as columns, other records kept aside.

    Our own logs are read through their round index (``index``: ``<log>.idx``, caught up
    or rebuilt from the log as needed) unless ``use_index`` is false (default: on, unless
    the environment sets ``SHADOW_BURNIN_INDEX=off``); without it, one streaming pass
    (``bench``'s hot loop, see ``logscan``). The time window is applied afterwards on the
    columns.
    """
    if use_index is None:
        use_index = index_enabled()
    builder = ColumnBuilder()
    other: list[dict[str, Any]] = []
    imported = 0
    notes: list[str] = []
    aa: AATable | None = None
    flips: FlipTable | None = None
    if legacy.is_legacy_log(path):
        builder.add_all(record for _number, _t, record in iter_records(path))
        notes.append(legacy.NOTE)
        columns = builder.build()
    else:
        if use_index:
            from shadow_burnin.io.log.index import load

            found = load(path)
            columns, other, imported = found.columns, list(found.other), found.imported
            aa, flips = found.aa, found.flips
            notes.extend(found.notes)
        else:
            columns, other, imported = _scan_ours(path)
        tail = _torn_tail(path)
        if tail is not None:
            if not len(columns) and not other and not tail.lstrip().startswith(b'{"'):
                raise LogError(path, "not a shadow-burnin log (no complete line, and the "
                               "text is not a JSON record)")
            notes.append("the last line is incomplete (a run writing it, or a crash; "
                         "`run` moves it aside on start): not counted")
        filed = list(iter_event_file(path))
        if filed:  # events of this version: beside the log, merged in time order
            other = sorted([*other, *filed], key=lambda r: str(r.get("ts", "")))
    if window is not None and (window.since is not None or window.until is not None):
        mask = np.ones(len(columns), dtype=bool)
        if window.since is not None:
            mask &= columns.ts >= window.since
        if window.until is not None:
            mask &= columns.ts < window.until
        columns = columns.select(mask)
        if flips is not None:
            flips = flips.select_rows(mask)
        if aa is not None:
            aa = aa.select(window_mask(aa.ts, window))
        other = [r for r in other if window.contains(_ts(path, 0, r))]
    if imported:
        notes.append(f"{imported} round(s) imported from the earlier bash tool: their texts "
                     "hold only the first line of each reply")
    return LogScan(columns=columns, other=other, notes=notes, aa=aa, flips=flips)


def window_mask(ts: np.ndarray, window: Window) -> np.ndarray:
    """Where ``window.contains`` holds, over an array of times (NaN: never)."""
    mask = ~np.isnan(ts)
    if window.since is not None:
        mask &= ts >= window.since
    if window.until is not None:
        mask &= ts < window.until
    return mask


def _torn_tail(path: Path) -> bytes | None:
    """The start of what follows the log's last newline (None: it ends with one)."""
    with open_log(path) as fh:
        size = fh.seek(0, os.SEEK_END)
        if not size:
            return None
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return None
        back = min(size, 1 << 16)
        fh.seek(size - back)
        chunk = fh.read(back)
    cut = chunk.rfind(b"\n")
    return chunk[cut + 1:][:64] if cut >= 0 or back == size else b""


PARALLEL_MIN_BYTES = 64 * 1024 * 1024


def _scan_ours(path: Path) -> tuple[Columns, list[dict[str, Any]], int]:
    """Scan our own log; a large one in byte ranges on every core, joined in order."""
    try:
        size = path.stat().st_size
    except OSError:
        size = 0
    from shadow_burnin.io.log.logscan import scan_range  # msgspec: only to fold lines

    workers = min(os.cpu_count() or 1, 8)
    if size < PARALLEL_MIN_BYTES or workers < 2:
        return scan_range(path, 0, None)
    bounds = [size * i // workers for i in range(workers)] + [None]
    import multiprocessing  # only for a large range: not on the warm read path
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        # results in range order: a bad line raises the first range's error (exact line)
        parts = list(pool.map(scan_range, [path] * workers, bounds[:-1], bounds[1:]))
    other = [r for part in parts for r in part[1]]
    return concat_columns([p[0] for p in parts]), other, sum(p[2] for p in parts)


def indexed(path: Path) -> Index | None:
    """The log's round index (caught up, saved), None for a legacy log (no offsets)."""
    if legacy.is_legacy_log(path):
        return None
    from shadow_burnin.io.log.index import load

    return load(path)


def _lookup_index(path: Path) -> Index | None:
    """The index for reading single records (``show``/``recent``); None when the log
    holds records the summaries refuse (e.g. a hand-edited field of the wrong type):
    those commands then read the lines themselves, so such a record can still be shown."""
    try:
        return indexed(path)
    except LogError:
        return None


def read_rows(path: Path, index: Index, rows: Iterable[int]) -> Iterator[dict[str, Any]]:
    """The round records of the given index rows, each read at its byte offset (one
    seek and one read per round, no scan)."""
    with open_log(path) as fh:
        for i in rows:
            fh.seek(int(index.offset[i]))
            line = fh.read(int(index.length[i]))
            yield decode_line(line, partial(LogError, path))


def last_rounds(path: Path, n: int) -> list[dict[str, Any]]:
    """The last ``n`` round records (through the index: read at their offsets)."""
    from collections import deque

    idx = _lookup_index(path)
    if idx is not None:
        return list(read_rows(path, idx, range(max(0, len(idx.offset) - n),
                                               len(idx.offset))))

    keep: deque[dict[str, Any]] = deque(maxlen=n)
    for _number, _t, record in iter_rounds(path):
        keep.append(record)
    return list(keep)


def find_round(path: Path, number: int) -> dict[str, Any] | None:
    """Round ``number``'s record (through the index: one read at its offset)."""
    idx = _lookup_index(path)
    if idx is not None:
        row = idx.row_of(number)
        return None if row is None else next(read_rows(path, idx, [row]))
    for _line, _t, record in iter_rounds(path):
        if record.get("round") == number:
            return record
    return None
