"""The round index: a log's columns, saved beside it (``<log>.idx``) so that summaries
do not parse JSON at all.

A cache, never the source of truth: it is rebuilt from the log whenever it does not
match it. File layout (little-endian)::

    b"SBIDX1\\n" | u64 header length | header (JSON) | column bytes, back to back

The header names each column (dtype, byte offset, length), the categories and prompts
(the dictionaries the id columns index), the log's non-round records folded so far (A/A
pairs as scans hand them on, inline events of older logs), how many rounds came from
the earlier tool, and what it covers: the log's first bytes ``covered`` (ending after a
newline), a digest of the log's first line and of the last covered line, and a CRC of
the column bytes. Besides ``core.columns.Columns`` each round has its line's byte offset
and length in the log (``offset``/``length``), for readers that need texts.

On open (:func:`load`) the index is checked against the log: missing → built; the log
grew → only the new bytes are folded (the fast reader, ``logscan``); shorter log, other
first/last line, bad CRC, unreadable header → rebuilt, with a note saying why. Saved with
``sidecars.write_atomic``; a directory we cannot write to only costs the saving (noted).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import struct
import sys
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from shadow_burnin.core.columns import FX_COLUMNS, Columns, concat_columns
from shadow_burnin.core.records import SIDES
from shadow_burnin.errors import StorageError
from shadow_burnin.io.log.lines import open_log
from shadow_burnin.io.log.logscan import scan_range_at
from shadow_burnin.io.log.sidecars import index_path, write_atomic

MAGIC = b"SBIDX1\n"
VERSION = 1
PARALLEL_MIN_BYTES = 64 * 1024 * 1024
PROGRESS_MIN_BYTES = 256 * 1024 * 1024


@dataclass
class Index:
    """A log's rounds as columns plus where each round's line is."""

    columns: Columns
    offset: np.ndarray  # int64: byte offset of each round's line in the log
    length: np.ndarray  # int32: its length, newline excluded
    other: list[dict[str, Any]]
    imported: int
    covered: int  # the log's first ``covered`` bytes are folded (ends after a newline)
    first_digest: str
    last_digest: str
    notes: list[str] = field(default_factory=list)


def _layout(columns: Columns, offset: np.ndarray, length: np.ndarray
            ) -> list[tuple[str, np.ndarray]]:
    cols: list[tuple[str, np.ndarray]] = [
        ("bucket", columns.bucket), ("prefix", columns.prefix),
        ("category", columns.category), ("prompt", columns.prompt), ("ts", columns.ts),
        ("offset", offset), ("length", length)]
    cols += [(f"latency.{s}", columns.latency[s]) for s in SIDES]
    cols += [(f"ttft.{s}", columns.ttft[s]) for s in SIDES]
    cols += [(f"extra.{name}", columns.extra[name]) for name, _ in FX_COLUMNS]
    cols += [(f"tokstats.{name}", arr) for name, arr in columns.tokstats.items()]
    return cols


def encode(index: Index) -> bytes:
    arrays = _layout(index.columns, index.offset, index.length)
    meta, chunks, at = [], [], 0
    for name, arr in arrays:
        raw = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False)
        data = raw.tobytes()
        meta.append({"name": name, "dtype": raw.dtype.str, "at": at, "size": len(data)})
        chunks.append(data)
        at += len(data)
    body = b"".join(chunks)
    header = orjson.dumps({
        "version": VERSION, "rows": len(index.columns), "covered": index.covered,
        "first": index.first_digest, "last": index.last_digest, "imported": index.imported,
        "categories": index.columns.categories, "prompts": index.columns.prompts,
        "other": index.other, "columns": meta, "crc": zlib.crc32(body)})
    return MAGIC + struct.pack("<Q", len(header)) + header + body


class CorruptIndex(Exception):
    """An index file that cannot be read back as written."""


def decode(data: bytes) -> Index:
    """The index in ``data`` (CorruptIndex: not one, truncated, or its bytes changed)."""
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 8:
        raise CorruptIndex("not an index file")
    (hlen,) = struct.unpack_from("<Q", data, len(MAGIC))
    start = len(MAGIC) + 8
    try:
        head = orjson.loads(data[start:start + hlen])
        if head["version"] != VERSION:
            raise CorruptIndex(f"index version {head['version']}")
        body = memoryview(data)[start + hlen:]
        if len(body) != sum(c["size"] for c in head["columns"]) \
                or zlib.crc32(body) != head["crc"]:
            raise CorruptIndex("truncated or altered")
        cols = {c["name"]: np.frombuffer(body, np.dtype(c["dtype"]), offset=c["at"],
                                         count=c["size"] // np.dtype(c["dtype"]).itemsize)
                for c in head["columns"]}
        rows = int(head["rows"])
        if any(len(v) != rows for v in cols.values()):
            raise CorruptIndex("columns of unequal length")
        columns = Columns(
            bucket=cols["bucket"], latency={s: cols[f"latency.{s}"] for s in SIDES},
            ttft={s: cols[f"ttft.{s}"] for s in SIDES}, prefix=cols["prefix"],
            category=cols["category"], prompt=cols["prompt"], ts=cols["ts"],
            categories=list(head["categories"]), prompts=list(head["prompts"]),
            extra={name: cols[f"extra.{name}"] for name, _ in FX_COLUMNS},
            tokstats={name.removeprefix("tokstats."): arr for name, arr in cols.items()
                      if name.startswith("tokstats.")})
        return Index(columns, cols["offset"], cols["length"], list(head["other"]),
                     int(head["imported"]), int(head["covered"]), str(head["first"]),
                     str(head["last"]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, struct.error) as exc:
        raise CorruptIndex(f"unreadable ({type(exc).__name__})") from None


def _digest(line: bytes) -> str:
    return hashlib.blake2b(line, digest_size=16).hexdigest()


def _first_line(log: Path) -> bytes:
    with open_log(log) as fh:
        return fh.readline(1 << 20)


def _line_ending_at(log: Path, end: int) -> bytes:
    """The log's line that ends (with its newline) at byte ``end``."""
    if end <= 0:
        return b""
    with open_log(log) as fh:
        back = min(end, 1 << 16)
        while True:
            fh.seek(end - back)
            chunk = fh.read(back)
            cut = chunk.rfind(b"\n", 0, len(chunk) - 1)
            if cut >= 0 or back == end:
                return chunk[cut + 1:]
            back = min(end, back * 2)


def _complete_end(log: Path, size: int) -> int:
    """Where the log's complete lines end (after the last newline in its first ``size``)."""
    if size <= 0:
        return 0
    with open_log(log) as fh:
        pos = size
        while pos > 0:
            back = min(pos, 1 << 16)
            fh.seek(pos - back)
            chunk = fh.read(back)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                return pos - back + cut + 1
            pos -= back
    return 0


def _empty() -> Index:
    from shadow_burnin.core.columns import ColumnBuilder

    return Index(ColumnBuilder().build(), np.empty(0, np.int64), np.empty(0, np.int32),
                 [], 0, 0, "", "")


def _fold(log: Path, start: int, end: int) -> tuple[Columns, list[dict[str, Any]], int,
                                                    np.ndarray]:
    """Columns of the lines in [start, end) (``end`` after a newline), on every core when
    the range is large, joined in order."""
    workers = min(os.cpu_count() or 1, 8)
    if end - start < PARALLEL_MIN_BYTES or workers < 2:
        columns, other, imported, _stop, lines = scan_range_at(log, start, end, [])
        return columns, other, imported, lines
    bounds = [start + (end - start) * i // workers for i in range(workers)] + [end]
    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        parts = list(pool.map(scan_range_at, [log] * workers, bounds[:-1], bounds[1:],
                              [[] for _ in range(workers)]))
    return (concat_columns([p[0] for p in parts]), [r for p in parts for r in p[1]],
            sum(p[2] for p in parts), np.concatenate([p[4] for p in parts], axis=1))


def _extend(log: Path, base: Index, end: int, first: str) -> Index:
    """``base`` with the log's lines from ``base.covered`` to ``end`` folded in."""
    columns, other, imported, lines = _fold(log, base.covered, end)
    joined = concat_columns([base.columns, columns]) if len(base.columns) else columns
    return Index(joined, np.concatenate((base.offset, lines[0].astype(np.int64))),
                 np.concatenate((base.length, lines[1].astype(np.int32))),
                 [*base.other, *other], base.imported + imported, end, first,
                 _digest(_line_ending_at(log, end)), list(base.notes))


def _progress(log: Path, what: str, nbytes: int) -> float | None:
    if nbytes < PROGRESS_MIN_BYTES:
        return None
    print(f"{what} the round index of {log.name}: {nbytes / 1e6:.0f} MB of log to read…",
          file=sys.stderr, flush=True)
    return time.monotonic()


def load(log: Path, *, save: bool = True) -> Index:
    """The log's index, checked against the log, caught up or rebuilt, saved if changed.

    Raises ``LogError`` (from the fast reader) for a log that is not ours; the index
    itself never raises for being missing, stale or corrupt: it is rebuilt (noted).
    """
    target = index_path(log)
    with open_log(log) as fh:  # LogError for a missing, unreadable or directory path
        size = os.fstat(fh.fileno()).st_size
    end = _complete_end(log, size)
    first = _digest(_first_line(log)) if end else ""
    notes: list[str] = []
    base: Index | None = None
    try:
        data = target.read_bytes()
    except FileNotFoundError:
        data = None
    except OSError as exc:
        data = None
        notes.append(f"round index {target.name} unreadable ({exc.strerror}): rebuilt")
    if data is not None:
        try:
            base = decode(data)
        except CorruptIndex as exc:
            notes.append(f"round index {target.name} corrupt ({exc}): rebuilt from the log")
        else:
            if base.covered > end or (base.covered and (
                    base.first_digest != first
                    or _digest(_line_ending_at(log, base.covered)) != base.last_digest)):
                notes.append(f"round index {target.name} does not match the log (another "
                             "log, or the log was rewritten): rebuilt from the log")
                base = None
    if base is not None and base.covered == end:
        base.notes = notes
        return base
    started = _progress(log, "catching up" if base else "building", end - (
        base.covered if base else 0))
    index = _extend(log, base if base is not None else _empty(), end, first)
    if started is not None:
        print(f"round index of {log.name}: {len(index.columns)} rounds in "
              f"{time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
    if save and end:  # nothing to keep for a log without a complete line (or no log)
        try:
            write_atomic(target, encode(index))
        except StorageError as exc:
            notes.append(f"round index not saved: {exc}")
    index.notes = notes
    return index
