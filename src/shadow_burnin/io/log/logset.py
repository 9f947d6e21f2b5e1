"""Which files make up the logs a reading command was given: shards and segments.

- A **shard** is one burn-in log (one pair of servers, one host): ``--log`` may be given
  several times and each value may be a glob (``'fleet/*/burnin.jsonl'``, quoted so the
  shell leaves it to us). A shard's name is its path relative to the common root of all
  the shards (``fleet/a/burnin.jsonl`` and ``fleet/b/burnin.jsonl`` → ``a/burnin.jsonl``,
  ``b/burnin.jsonl``; one log alone is named by its file name).
- A **segment** is one file of a rotated log (``run --rotate``): the live log keeps its
  name (``burnin.jsonl``) and the closed segments are ``burnin.jsonl.00001``,
  ``burnin.jsonl.00002``, … in order; a reader spans them all as one log, oldest first.

Everything here only lists and checks files (a missing file, a glob matching nothing, a
file that is not a log: one ``LogError`` naming it); reading them is ``logread``'s job.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import orjson

from shadow_burnin.core.columns import concat_columns
from shadow_burnin.core.records import RecordKind, record_kind
from shadow_burnin.core.sidetables import join_scans_tables
from shadow_burnin.errors import LogError
from shadow_burnin.inputs import check_input
from shadow_burnin.io.log import legacy
from shadow_burnin.io.log.lines import open_log
from shadow_burnin.io.log.logread import LogScan, Window, iter_rounds, scan
from shadow_burnin.io.log.logread import find_round as logread_find_round
from shadow_burnin.io.log.logread import last_rounds as logread_last_rounds

SEGMENT_DIGITS = 5
_SEGMENT = re.compile(r"\.(\d{" + str(SEGMENT_DIGITS) + r",})$")
_GLOB_CHARS = frozenset("*?[")
NO_LOG = "no such log file (run `shadow-burnin run` first, or pass --log)"


def segment_path(log: Path, number: int) -> Path:
    """The closed segment ``number`` (1, 2, …) of ``log``: ``burnin.jsonl.00001``."""
    return log.with_name(f"{log.name}.{number:0{SEGMENT_DIGITS}d}")


def closed_segments(log: Path) -> list[Path]:
    """``log``'s closed segments, oldest first (none for a log never rotated)."""
    try:
        names = os.listdir(log.parent if str(log.parent) else ".")
    except OSError:
        return []
    found = []
    prefix = log.name
    for name in names:
        if name.startswith(prefix):
            m = _SEGMENT.fullmatch(name[len(prefix):]) if name[len(prefix):] else None
            if m is not None:
                found.append((int(m.group(1)), log.with_name(name)))
    return [p for _n, p in sorted(found)]


def is_segment_of(log: Path, path: Path) -> bool:
    """True when ``path`` has the name of one of ``log``'s closed segments."""
    a, b = Path(os.path.abspath(log)), Path(os.path.abspath(path))
    rest = b.name[len(a.name):] if b.name.startswith(a.name) else ""
    return a.parent == b.parent and bool(rest) and _SEGMENT.fullmatch(rest) is not None


def segments(log: Path) -> list[Path]:
    """Every file of ``log`` in round order: closed segments, then the live log (left
    out while it is still the same file as the last segment: a rotation cut short)."""
    closed = closed_segments(log)
    if closed:
        try:
            if os.path.samefile(closed[-1], log):
                return closed
        except OSError:
            pass
    return [*closed, log]


class Shard(msgspec.Struct, frozen=True):
    """One log of a set: its display name and its path (the live segment)."""

    name: str
    path: Path

    def segments(self) -> list[Path]:
        return segments(self.path)


def is_glob(text: str) -> bool:
    return any(c in _GLOB_CHARS for c in text)


def expand(specs: Iterable[str | Path]) -> list[Path]:
    """``--log`` values → files, in the order given (globs sorted, duplicates dropped).

    A value naming an existing file is that file even if its name holds glob
    characters; a glob that matches nothing is a LogError naming it."""
    out: list[Path] = []
    seen: set[str] = set()
    for spec in specs:
        text = str(spec)
        if not text.strip():
            raise LogError(text, "empty --log value")
        if is_glob(text) and not os.path.lexists(text):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise LogError(text, "the glob matches no file")
            paths = [Path(m) for m in matches]
        else:
            paths = [Path(text)]
        for p in paths:
            key = os.path.realpath(p)
            if key not in seen:
                seen.add(key)
                out.append(p)
    return out


def check_log(path: Path) -> None:
    """Refuse (LogError naming it) a path that is missing, not a regular file, or whose
    first line is not a JSON object (an empty file is an empty log)."""
    if not check_input(path, LogError, "log"):
        raise LogError(path, NO_LOG)
    with open_log(path) as fh:
        first = fh.readline(1 << 20)
    if not first.strip():
        return
    if not first.endswith(b"\n") and len(first) >= 1 << 20:
        raise LogError(path, "not a shadow-burnin log (the first line is over 1 MiB)")
    if not first.endswith(b"\n"):  # a log whose only line is being written
        if not first.lstrip().startswith(b"{"):
            raise LogError(path, "not a shadow-burnin log (the first line is not JSON)")
        return
    try:
        record = orjson.loads(first)
    except orjson.JSONDecodeError:
        raise LogError(path, "not a shadow-burnin log (the first line is not JSON)",
                       line=1) from None
    if not isinstance(record, dict) or ("ts" not in record
                                        and not legacy.is_legacy_record(record)):
        raise LogError(path, "not a shadow-burnin log (the first line is not a round or "
                       "event record)", line=1)


def shard_names(paths: Sequence[Path]) -> list[str]:
    """Each path relative to the common root of all of them (one: its file name)."""
    if not paths:
        return []
    absolute = [os.path.abspath(p) for p in paths]
    root = os.path.commonpath([os.path.dirname(a) for a in absolute])
    return [os.path.relpath(a, root) for a in absolute]


def resolve(specs: Sequence[str | Path]) -> list[Shard]:
    """The shards named by ``--log`` values (files and/or globs), each checked."""
    paths = expand(specs)
    for p in paths:
        check_log(p)
        for segment in closed_segments(p):
            check_log(segment)
    return [Shard(name, p) for name, p in zip(shard_names(paths), paths, strict=True)]


def combine_scans(scans: Sequence[LogScan], *, by_time: bool = False) -> LogScan:
    """Several scans as one: columns joined (``by_time``: rows ordered by round start,
    for shards that ran side by side; segments are already in order), the other
    records merged in time order, notes kept."""
    if len(scans) == 1:
        return scans[0]
    columns = concat_columns([s.columns for s in scans])
    aa, flips = join_scans_tables([s.aa for s in scans], [s.other for s in scans],
                                  [s.flips for s in scans], [len(s.columns) for s in scans])
    if by_time and len(columns):
        order = np.argsort(columns.ts, kind="stable")
        columns = columns.select(order)
        if flips is not None:  # rows renumbered as the columns were reordered
            where = np.empty_like(order)
            where[order] = np.arange(order.size)
            flips = flips.shifted(0)
            flips.row = where[flips.row]
    # with an A/A table the A/A records are in it, not in ``other``
    other = [r for s in scans for r in s.other
             if aa is None or record_kind(r) is not RecordKind.AA]
    if by_time:
        other.sort(key=lambda r: str(r.get("ts", "")))
    notes = list(dict.fromkeys(n for s in scans for n in s.notes))
    return LogScan(columns=columns, other=other, notes=notes, aa=aa, flips=flips)


def scan_segments(log: Path, window: Window | None = None) -> LogScan:
    """``logread.scan`` over every segment of a (possibly rotated) log, as one log:
    each segment through its own index; the events file belongs to the live log."""
    parts = segments(log)
    if len(parts) == 1:
        return scan(log, window)
    return combine_scans([scan(p, window) for p in parts])


def iter_segment_rounds(log: Path, window: Window | None = None
                        ) -> Iterator[tuple[int, float, dict[str, Any]]]:
    """``logread.iter_rounds`` over every segment, oldest first."""
    for p in segments(log):
        yield from iter_rounds(p, window)


def _first_round(path: Path) -> int | None:
    try:
        with open_log(path) as fh:
            head = fh.readline(1 << 20)
        record = orjson.loads(head) if head.endswith(b"\n") else None
    except (orjson.JSONDecodeError, LogError):
        return None
    number = record.get("round") if isinstance(record, dict) else None
    return number if isinstance(number, int) else None


def find_round(log: Path, number: int) -> dict[str, Any] | None:
    """``logread.find_round`` across segments: only the segment that holds ``number``
    (the last one whose first round is not after it) is read."""
    for p in reversed(segments(log)):
        first = _first_round(p)
        if first is None or first <= number:
            found = logread_find_round(p, number)
            if found is not None or first is not None:
                return found
    return None


def last_rounds(log: Path, n: int) -> list[dict[str, Any]]:
    """``logread.last_rounds`` across segments (the live log first, older ones only if
    it holds fewer than ``n``)."""
    keep: list[dict[str, Any]] = []
    for p in reversed(segments(log)):
        if len(keep) >= n:
            break
        keep = logread_last_rounds(p, n - len(keep)) + keep
    return keep
