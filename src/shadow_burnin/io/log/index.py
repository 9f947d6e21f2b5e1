"""The round index: a log's columns, kept beside it (``<log>.idx``) so that summaries do
not parse JSON at all.

A cache, never the source of truth: whatever it holds is checked against the log, and
what it lacks is folded from the log. The file is a chain of **segments**, each covering
the log's bytes ``[s, e)`` (whole lines) and appended after the previous one::

    segment = b"SBX3" | u32 header length | u64 body length | u64 XXH3-64 of header+body
              | header (JSON) | pad to 8 | body: column bytes, each padded to 8

The header says how many rounds, A/A pairs, flips and noise samples the segment holds
(``n``, ``na``, ``nf``, ``nv``), which bytes of the log it covers (``s``, ``e``), a digest of
the last covered line (``l``), the names it adds to the dictionaries the id columns index
(``cat``, ``pr``, ``lab``: ids are first-seen order over the log, so every writer numbers
alike), inline events of older logs (``ev``) and the column layout (``cols``: name, dtype,
table) when it differs from the previous segment's. The first segment also carries the
format version, the digest of the log's first line and the ``Columns`` field names.

Every field of ``core.columns.Columns`` is stored generically (an array field as one
column, a dict-of-arrays field as one column per key, ``name.key``), so a new per-round
field reaches the index without work here; besides them each round's line offset and
length (``offset``, ``length``), the A/A table and the flip table of
``core.sidetables``.

Writers: the runner appends one segment per commit, in its commit thread, after the
log's fsync (:class:`Appender`: a small write, never the whole file); a reader that had
to fold the log (stale index) or finds many small segments rewrites the file as one
segment (``sidecars.write_atomic``). A torn or unchained trailing segment (kill -9, a
reader's rewrite racing an append) is ignored: those rounds are folded from the log.
A first segment that is unreadable, corrupt or from another log (first-line digest) or a
log rewritten under the index (last-line digest) → rebuilt, with a note.
"""

from __future__ import annotations

import mmap
import os
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import msgspec.structs
import numpy as np
import orjson
import xxhash

from shadow_burnin.core.columns import ColumnBuilder, Columns, concat_columns
from shadow_burnin.core.records import BUCKETS, RecordKind, record_kind
from shadow_burnin.core.runverdict import flip_of
from shadow_burnin.core.sidetables import (
    AATable,
    FlipTable,
    aa_table,
    concat_aa,
    concat_flips,
    empty_aa,
    empty_flips,
    flip_table,
)
from shadow_burnin.errors import LogError, StorageError
from shadow_burnin.io.log.indexcheck import (
    CRC_CHUNK,
    HEAD,
    MAGIC,
    OLD_MAGIC,
    checksum,
    crc_range,
    prefetched,
)
from shadow_burnin.io.log.lines import open_log
from shadow_burnin.io.log.sidecars import index_path, write_atomic

# 4: the first and last lines' digests are XXH3-128 (3: BLAKE2b, whose hashlib import
# loaded OpenSSL on every read); 3: XXH3-64 checksums (2: CRC-32). Another version is
# rebuilt, with a note.
VERSION = 4
_HEAD = HEAD  # magic, header lengths, checksum (defined in indexcheck, the light part)
PARALLEL_MIN_BYTES = 64 * 1024 * 1024
PROGRESS_MIN_BYTES = 256 * 1024 * 1024
MAX_SEGMENTS = 64  # a reader that may save rewrites a file of more as one segment
NOMATCH = BUCKETS.index("no-match")
# dictionaries of Columns and the id column each one names (``error``: one per side,
# −1 for none), and the segment header key that lists the names a segment adds
DICTS = {"categories": "category", "prompts": "prompt", "errors": "error"}
DICT_KEYS = {"categories": "cat", "prompts": "pr", "errors": "err"}
TABLES = ("r", "a", "f", "v")  # rounds, A/A pairs, flips, noise values


class Index(msgspec.Struct):
    """A log's rounds as columns plus where each round's line is."""

    columns: Columns
    offset: np.ndarray  # int64: byte offset of each round's line in the log
    length: np.ndarray  # int32: its length, newline excluded
    other: list[dict[str, Any]]  # inline events of older logs (A/A pairs: ``aa``)
    imported: int
    covered: int  # the log's first ``covered`` bytes are folded (ends after a newline)
    first_digest: str
    last_digest: str
    notes: list[str] = msgspec.field(default_factory=list)
    aa: AATable = msgspec.field(default_factory=empty_aa)
    flips: FlipTable = msgspec.field(default_factory=empty_flips)
    segments: int = 1
    rounds: np.ndarray = msgspec.field(default_factory=lambda: np.empty(0, np.int64))  # numbers

    def row_of(self, number: int) -> int | None:
        """The row of round ``number`` (its first line if the log repeats it), None if
        there is none (round numbers ascend in a log: a binary search, checked)."""
        at = int(np.searchsorted(self.rounds, number, side="left"))
        if at < self.rounds.size and self.rounds[at] == number and (
                at == 0 or self.rounds[at - 1] < number):
            return at
        hits = np.flatnonzero(self.rounds == number)  # not in order (an imported log)
        return int(hits[0]) if hits.size else None


def _optional(name: str) -> bool:
    """A column only some commits have (``Columns.tokstats``: rounds without token
    statistics have none); a segment without it reads as NaN."""
    return name.startswith("tokstats.")


class CorruptIndex(Exception):
    """An index file that cannot be read back as written."""


# -- columns <-> named arrays ------------------------------------------------------------

def _arrays(idx: Index) -> list[tuple[str, str, np.ndarray]]:
    """Every array of the index as (name, table, array), ``Columns`` generically."""
    out: list[tuple[str, str, np.ndarray]] = []
    for f in msgspec.structs.fields(Columns):
        value = getattr(idx.columns, f.name)
        if isinstance(value, np.ndarray):
            out.append((f.name, "r", value))
        elif isinstance(value, dict):
            out += [(f"{f.name}.{k}", "r", v) for k, v in value.items()]
    out += [("@offset", "r", idx.offset), ("@length", "r", idx.length),
            ("@round", "r", idx.rounds)]
    out += [(f"@aa.{n}", "a", getattr(idx.aa, n)) for n in AATable.ROW_FIELDS]
    out += [("@aa.moves", "v", idx.aa.moves), ("@aa.drifts", "v2", idx.aa.drifts)]
    out += [(f"@flip.{n}", "f", getattr(idx.flips, n)) for n in FlipTable.FIELDS]
    return out


def _columns_from(named: dict[str, np.ndarray], names: dict[str, list[str]]) -> Columns:
    kwargs: dict[str, Any] = {}
    for f in msgspec.structs.fields(Columns):
        if f.name in named:
            kwargs[f.name] = named[f.name]
        elif f.name in DICTS:
            kwargs[f.name] = names[f.name]
        else:
            prefix = f.name + "."
            kwargs[f.name] = {k[len(prefix):]: v for k, v in named.items()
                              if k.startswith(prefix)}
    return Columns(**kwargs)


def _pad(n: int) -> int:
    return -n % 8


def _segment(named: list[tuple[str, str, np.ndarray]], head: dict[str, Any],
             layout_known: list[Any] | None) -> tuple[bytes, list[Any]]:
    chunks: list[bytes] = []
    layout = []
    for name, table, arr in named:
        raw = np.ascontiguousarray(arr)
        raw = raw.astype(raw.dtype.newbyteorder("<"), copy=False)
        layout.append([name, raw.dtype.str, table])
        data = raw.tobytes()
        chunks += [data, b"\0" * _pad(len(data))]
    if layout != layout_known:
        head["cols"] = layout
    header = orjson.dumps(head)
    header += b" " * _pad(len(header) + _HEAD.size)
    body = b"".join(chunks)
    return _HEAD.pack(MAGIC, len(header), len(body), checksum(header, body)) + header + body, \
        layout


def encode(index: Index) -> bytes:
    """The index as one segment (the whole file)."""
    cols = index.columns
    head = {"v": VERSION, "first": index.first_digest,
            "fields": [f.name for f in msgspec.structs.fields(Columns)],
            "n": len(cols), "na": len(index.aa), "nf": len(index.flips),
            "nv": int(index.aa.moves.size), "nv2": int(index.aa.drifts.size),
            "s": 0, "e": index.covered, "l": index.last_digest, "imp": index.imported,
            "cat": cols.categories, "pr": cols.prompts, "err": cols.errors,
            "lab": index.aa.labels}
    if index.other:
        head["ev"] = index.other
    data, _ = _segment(_arrays(index), head, None)
    return data


class _Read(msgspec.Struct):
    """Segments read back, in chain order."""

    first: str = ""
    covered: int = 0
    last: str = ""
    imported: int = 0
    parts: dict[str, list[np.ndarray]] = msgspec.field(default_factory=dict)
    names: dict[str, list[str]] = msgspec.field(default_factory=lambda: {
        "categories": [], "prompts": [], "errors": [], "labels": []})
    other: list[dict[str, Any]] = msgspec.field(default_factory=list)
    rows: int = 0
    segments: int = 0
    stopped: str | None = None  # why reading stopped before the file's end


def _read_segments(buf: Any, size: int, crc_of: Any = None) -> _Read:
    """Read the chain of segments in ``buf`` (CorruptIndex: the first one is bad);
    ``crc_of(start, end)``: the checksum of those bytes read another way (None: from ``buf``)."""
    out = _Read()
    pos = 0
    layout: list[Any] | None = None
    while pos < size:
        try:
            if size - pos < _HEAD.size:
                raise CorruptIndex("truncated")
            magic, hlen, blen, crc = _HEAD.unpack_from(buf, pos)
            if magic != MAGIC:
                raise CorruptIndex(("index version 2" if magic == OLD_MAGIC else
                                    "not an index file") if pos == 0 else "bad segment")
            start = pos + _HEAD.size
            end = start + hlen + blen
            if end > size:
                raise CorruptIndex("truncated")
            view = memoryview(buf)[start:end]
            if (crc_of(start, end) if crc_of is not None else checksum(view)) != crc:
                raise CorruptIndex("altered (checksum)")
            head = orjson.loads(bytes(view[:hlen]))
            if pos == 0:
                if head.get("v") != VERSION:
                    raise CorruptIndex(f"index version {head.get('v')}")
                if head.get("fields") != [f.name for f in msgspec.structs.fields(Columns)]:
                    raise CorruptIndex("written by another version (columns differ)")
                out.first = str(head["first"])
            elif head["s"] != out.covered:
                raise CorruptIndex("unchained segment")
            layout = head.get("cols", layout)
            if layout is None:
                raise CorruptIndex("no column layout")
            counts = {"r": int(head["n"]), "a": int(head["na"]), "f": int(head["nf"]),
                      "v": int(head["nv"]), "v2": int(head["nv2"])}
            at = start + hlen
            seg: dict[str, np.ndarray] = {}
            for name, dtype, table in layout:
                kind = np.dtype(dtype)
                count = counts[table]
                seg[name] = np.frombuffer(buf, kind, count=count, offset=at)
                at += kind.itemsize * count + _pad(kind.itemsize * count)
            if at != end:
                raise CorruptIndex("body length differs from its columns")
            if pos and {n for n in seg if not _optional(n)} != \
                    {n for n in out.parts if not _optional(n)}:
                raise CorruptIndex("segments with different columns")
        except CorruptIndex as exc:
            if pos == 0:
                raise
            out.stopped = str(exc)
            return out
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError,
                struct.error) as exc:
            if pos == 0:
                raise CorruptIndex(f"unreadable ({type(exc).__name__})") from None
            out.stopped = f"unreadable ({type(exc).__name__})"
            return out
        if "@flip.row" in seg:
            seg["@flip.row"] = seg["@flip.row"] + out.rows
        for name in set(out.parts) - set(seg):  # an optional column this segment lacks
            seg[name] = np.full(counts["r"], np.nan, np.float32)
        for name, arr in seg.items():
            if name not in out.parts and out.rows:  # one earlier segments lacked
                out.parts[name] = [np.full(out.rows, np.nan, np.float32)]
            out.parts.setdefault(name, []).append(arr)
        out.names["categories"] += head.get("cat", [])
        out.names["prompts"] += head.get("pr", [])
        out.names["errors"] += head.get("err", [])
        out.names["labels"] += head.get("lab", [])
        out.other += head.get("ev", [])
        out.imported += int(head.get("imp", 0))
        out.covered, out.last = int(head["e"]), str(head["l"])
        out.rows += counts["r"]
        out.segments += 1
        pos = end
    return out


def _index_from(read: _Read) -> Index:
    named = {k: v[0] if len(v) == 1 else np.concatenate(v) for k, v in read.parts.items()}
    if len({a.size for k, a in named.items() if _table_of(k) == "r"}) > 1:
        raise CorruptIndex("columns of unequal length")
    aa_arrays: dict[str, Any] = {n: named[f"@aa.{n}"] for n in AATable.ROW_FIELDS}
    aa = AATable(**aa_arrays, moves=named["@aa.moves"], drifts=named["@aa.drifts"],
                 labels=list(read.names["labels"]))
    flips = FlipTable(*(named[f"@flip.{n}"] for n in FlipTable.FIELDS))
    cols = _columns_from({k: v for k, v in named.items() if not k.startswith("@")},
                         read.names)
    return Index(cols, named["@offset"], named["@length"], read.other, read.imported,
                 read.covered, read.first, read.last, aa=aa, flips=flips,
                 segments=read.segments, rounds=named["@round"])


def _table_of(name: str) -> str:
    if name.startswith("@aa.") and name not in ("@aa.moves", "@aa.drifts"):
        return "a"
    if name.startswith("@flip."):
        return "f"
    return "v" if name in ("@aa.moves", "@aa.drifts") else "r"


def decode(data: Any, crc_of: Any = None) -> Index:
    """The index in ``data`` (bytes or a buffer). CorruptIndex: not one, or its first
    segment truncated or altered, or columns missing (another version's layout); a bad
    later segment ends the chain there."""
    read = _read_segments(data, len(data), crc_of)
    try:
        return _index_from(read)
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptIndex(f"columns missing or of another shape ({exc})") from None


def detached(index: Index) -> Index:
    """The index with every array copied out of the file's mapping (for a long-lived
    reader: the file may be replaced or, by hand, truncated under it)."""
    def own(v: Any) -> Any:
        if isinstance(v, np.ndarray):
            return np.array(v)
        return {k: np.array(a) for k, a in v.items()} if isinstance(v, dict) else v

    cols = Columns(**{f.name: own(getattr(index.columns, f.name))
                      for f in msgspec.structs.fields(Columns)})
    aa = AATable(**{f.name: own(getattr(index.aa, f.name))
                    for f in msgspec.structs.fields(AATable)})
    flips = FlipTable(**{f.name: own(getattr(index.flips, f.name))
                         for f in msgspec.structs.fields(FlipTable)})
    return msgspec.structs.replace(index, columns=cols, offset=own(index.offset),
                               length=own(index.length), aa=aa, flips=flips,
                               rounds=own(index.rounds))


# -- the log side ------------------------------------------------------------------------

def _digest(line: bytes) -> str:
    return xxhash.xxh3_128_hexdigest(line)


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


def _empty(first: str = "") -> Index:
    return Index(ColumnBuilder().build(), np.empty(0, np.int64), np.empty(0, np.int32),
                 [], 0, 0, first, "")


def _flips_at(log: Path, columns: Columns, offset: np.ndarray, length: np.ndarray
              ) -> FlipTable:
    """The flips of the no-match rounds, read from their lines (a few per cent)."""
    rows = np.flatnonzero(columns.bucket == NOMATCH)
    found = []
    if rows.size:
        with open_log(log) as fh:
            for i in rows.tolist():
                fh.seek(int(offset[i]))
                record = orjson.loads(fh.read(int(length[i])))
                flip = flip_of(record.get("forensics"), record.get("refire"))
                if flip is not None:
                    found.append((i, flip))
    return flip_table(found)


def _fold_range(log: Path, start: int, end: int) -> tuple[Any, ...]:
    from shadow_burnin.io.log.logscan import scan_range_at  # msgspec: only to fold lines

    columns, other, imported, _stop, lines = scan_range_at(log, start, end, [])
    offset, length = lines[0].astype(np.int64), lines[1].astype(np.int32)
    return (columns, other, imported, offset, length,
            _flips_at(log, columns, offset, length), lines[2].astype(np.int64))


def _fold(log: Path, start: int, end: int, parallel: bool = True) -> tuple[Any, ...]:
    """The lines in [start, end) (``end`` after a newline) folded, on every core when the
    range is large, joined in order: columns, other records, imported, offsets, lengths,
    flips."""
    workers = min(os.cpu_count() or 1, 8)
    if end - start < PARALLEL_MIN_BYTES or workers < 2 or not parallel:
        return _fold_range(log, start, end)
    bounds = [start + (end - start) * i // workers for i in range(workers)] + [end]
    import multiprocessing  # only for a large range: not on the warm read path
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        parts = list(pool.map(_fold_range, [log] * workers, bounds[:-1], bounds[1:]))
    rows = np.cumsum([0] + [len(p[0]) for p in parts])
    return (concat_columns([p[0] for p in parts]), [r for p in parts for r in p[1]],
            sum(p[2] for p in parts), np.concatenate([p[3] for p in parts]),
            np.concatenate([p[4] for p in parts]),
            concat_flips([p[5].shifted(int(r)) for p, r in zip(parts, rows, strict=False)]),
            np.concatenate([p[6] for p in parts]))


def _split_other(other: list[dict[str, Any]], labels: list[str]
                 ) -> tuple[AATable, list[dict[str, Any]]]:
    aa = [r for r in other if record_kind(r) is RecordKind.AA]
    rest = [r for r in other if record_kind(r) is not RecordKind.AA]
    return aa_table(aa, {n: i for i, n in enumerate(labels)}), rest


def _extend(log: Path, base: Index, end: int, first: str, parallel: bool = True) -> Index:
    """``base`` with the log's lines from ``base.covered`` to ``end`` folded in."""
    columns, other, imported, offset, length, flips, rounds = _fold(log, base.covered, end,
                                                                    parallel)
    aa, events = _split_other(other, base.aa.labels)
    n = len(base.columns)
    joined = concat_columns([base.columns, columns]) if n else columns
    return Index(joined, np.concatenate((base.offset, offset)),
                 np.concatenate((base.length, length)), [*base.other, *events],
                 base.imported + imported, end, first, _digest(_line_ending_at(log, end)),
                 list(base.notes), concat_aa([base.aa, aa]),
                 concat_flips([base.flips, flips.shifted(n)]), base.segments + 1,
                 np.concatenate((base.rounds, rounds)))


def _progress(log: Path, what: str, nbytes: int) -> float | None:
    if nbytes < PROGRESS_MIN_BYTES:
        return None
    print(f"{what} the round index of {log.name}: {nbytes / 1e6:.0f} MB of log to read…",
          file=sys.stderr, flush=True)
    return time.monotonic()


def _open_index(target: Path, notes: list[str]) -> Index | None:
    """The index file read back (mapped, not copied); None when missing or corrupt."""
    try:
        fh = open(target, "rb")  # noqa: SIM115 (closed below)
    except FileNotFoundError:
        return None
    except OSError as exc:
        notes.append(f"round index {target.name} unreadable ({exc.strerror}): rebuilt")
        return None
    with fh:
        size = os.fstat(fh.fileno()).st_size
        fd = fh.fileno()

        window = memoryview(bytearray(CRC_CHUNK))
        early = prefetched(target, fd) or {}  # computed on a thread from this very file

        def crc_of(start: int, end: int) -> int:
            """The checksum read through a small buffer, not the mapping: only the columns a
            reader uses become resident (a 10 M-round index is 0.9 GB)."""
            got = early.get((start, end))
            return got if got is not None else crc_range(fd, start, end, window)

        try:
            buf: Any = mmap.mmap(fd, 0, prot=mmap.PROT_READ) if size else b""
        except (OSError, ValueError):
            buf, crc_of = fh.read(), None  # type: ignore[assignment]
        try:
            return decode(buf, crc_of)
        except CorruptIndex as exc:
            notes.append(f"round index {target.name} corrupt ({exc}): rebuilt from the log")
            return None


def load(log: Path, *, save: bool = True, parallel: bool = True) -> Index:
    """The log's index, checked against the log, caught up or rebuilt, saved if changed
    (``parallel``: a large range is folded on every core, by forked workers; off for a
    caller that is not the main thread).

    Raises ``LogError`` (from the fast reader) for a log that is not ours; the index
    itself never raises for being missing, stale or corrupt: it is rebuilt (noted).
    """
    target = index_path(log)
    with open_log(log) as fh:  # LogError for a missing, unreadable or directory path
        size = os.fstat(fh.fileno()).st_size
    end = _complete_end(log, size)
    first = _digest(_first_line(log)) if end else ""
    notes: list[str] = []
    base = _open_index(target, notes)
    if base is not None and (base.covered > end or (base.covered and (
            base.first_digest != first
            or _digest(_line_ending_at(log, base.covered)) != base.last_digest))):
        notes.append(f"round index {target.name} does not match the log (another "
                     "log, or the log was rewritten): rebuilt from the log")
        base = None
    if base is not None and base.covered == end:
        if save and base.segments > MAX_SEGMENTS:
            _save(target, base, notes)
        base.notes = notes
        return base
    started = _progress(log, "catching up" if base else "building", end - (
        base.covered if base else 0))
    index = _extend(log, base if base is not None else _empty(first), end, first, parallel)
    if started is not None:
        print(f"round index of {log.name}: {len(index.columns)} rounds in "
              f"{time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
    if save and end:  # nothing to keep for a log without a complete line (or no log)
        _save(target, index, notes)
    index.notes = notes
    return index


def _save(target: Path, index: Index, notes: list[str]) -> None:
    try:
        write_atomic(target, encode(index))
        index.segments = 1
    except StorageError as exc:
        notes.append(f"round index not saved: {exc}")


# -- the runner's appends ----------------------------------------------------------------

BATCH_ROUNDS = 1024  # the runner's appends: a segment every this many rounds …
BATCH_SECONDS = 1.0  # … or when the oldest round not yet in the index is this old


class Appender:
    """Appends the runner's committed rounds to the log's index, in batches.

    Opened when the store opens (the index caught up with the log first, so the segments
    chain). :meth:`append` runs in the commit's worker thread after the log's fsync and
    only notes how far the log has grown; every ``batch_rounds`` rounds, or when the
    oldest round not yet in the index is ``batch_seconds`` old (checked at each commit),
    and on :meth:`flush` (the store flushes on close and before rotating), the rounds
    since the last segment are folded from the log's new bytes by the readers' own
    block decoder (no per-round Python) and written as one segment. The index is a
    cache: a kill between flushes loses only rounds the next reader folds from the log.

    A reader that folded lines itself replaces the file (``write_atomic``); the next
    flush sees the file changed under it and re-reads it before appending, so its
    segments chain again. An error here never fails a commit (noted in ``failed``; the
    next reader folds what the index lacks).
    """

    def __init__(self, log: Path, *, batch_rounds: int | None = None,
                 batch_seconds: float | None = None, clock: Any = time.monotonic) -> None:
        self.log = log
        self.path = index_path(log)
        self.failed: str | None = None
        self.segments = 0  # segments this appender wrote (tests, benchmark)
        self.batch_rounds = BATCH_ROUNDS if batch_rounds is None else batch_rounds
        self.batch_seconds = BATCH_SECONDS if batch_seconds is None else batch_seconds
        self._clock = clock
        self._sync(load(log, save=True, parallel=threading.current_thread()
                        is threading.main_thread()))  # forking only from the main thread
        self._pending_end = self.covered
        self._pending_rounds = 0
        self._since: float | None = None

    def _sync(self, idx: Index) -> None:
        """Take the file's coverage and dictionaries as ``idx`` (just read) has them."""
        self.covered = idx.covered
        cols = idx.columns
        self._names = {dname: {n: i for i, n in enumerate(getattr(cols, dname))}
                       for dname in DICTS}
        self._names["labels"] = {n: i for i, n in enumerate(idx.aa.labels)}
        self._layout: list[Any] | None = None  # the next segment carries its layout
        self._file = self._identity()

    def _identity(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_ino, st.st_size, st.st_mtime_ns

    @property
    def pending(self) -> int:
        """Rounds committed to the log but not yet appended to the index."""
        return self._pending_rounds

    def append(self, records: list[dict[str, Any]], data: bytes, start: int) -> None:
        """Note ``records``, whose lines (``data``, one per record) the log holds from
        byte ``start`` on; append a segment when the batch is due."""
        if self.failed is not None or not records:
            return
        if start != self._pending_end:  # something else wrote the log: readers catch up
            self.failed = "round index not appended (the log grew under the runner)"
            return
        self._pending_end = start + len(data)
        self._pending_rounds += len(records)
        now = self._clock()
        if self._since is None:
            self._since = now
        if self._pending_rounds >= self.batch_rounds or now - self._since >= self.batch_seconds:
            self.flush()

    def flush(self) -> None:
        """Append the rounds not yet in the index as one segment (nothing if none)."""
        if self.failed is not None or self._pending_end == self.covered:
            return
        try:
            self._flush(self._pending_end)
        except (OSError, ValueError, KeyError, TypeError, StorageError, LogError) as exc:
            self.failed = f"round index not appended ({type(exc).__name__}: {exc})"
        finally:
            self._pending_rounds, self._since = 0, None

    def _flush(self, end: int) -> None:
        if self.covered and self._identity() != self._file:
            # a reader replaced the file (it folded lines the index lacked): read it
            # again, catch it up from the log (the rounds we were about to append) and
            # save it; our next segment chains on what it now holds
            self._sync(load(self.log, save=True, parallel=False))
            if self.covered != end:
                raise ValueError("the index does not end where the log does")
            return
        start = self.covered
        columns, other, imported, offset, length, flips, rounds = _fold_range(
            self.log, start, end)
        new: dict[str, list[str]] = {}
        for dname, cname in DICTS.items():  # the batch's names → the log's ids
            table = self._names[dname]
            before = len(table)
            remap = np.array([table.setdefault(n, len(table)) for n in getattr(columns, dname)]
                             + [-1], np.int32)  # the last entry keeps −1 (none) as it is
            ids = getattr(columns, cname)
            setattr(columns, cname, {k: remap[v] for k, v in ids.items()}
                    if isinstance(ids, dict) else remap[ids])
            new[dname] = list(table)[before:]
            setattr(columns, dname, list(table))
        labels = self._names["labels"]
        before = len(labels)
        aa = aa_table([r for r in other if record_kind(r) is RecordKind.AA], labels)
        events = [r for r in other if record_kind(r) is not RecordKind.AA]
        last = _digest(_line_ending_at(self.log, end))
        idx = Index(columns, offset, length, events, imported, end, "", last, aa=aa,
                    flips=flips, rounds=rounds)
        if start == 0:  # a new log: the index starts with this batch
            idx.first_digest = _digest(_first_line(self.log))
            write_atomic(self.path, encode(idx))
        else:
            head = {"n": len(columns), "na": len(aa), "nf": len(flips),
                    "nv": int(aa.moves.size), "nv2": int(aa.drifts.size), "s": start,
                    "e": end, "l": last, "imp": imported,
                    **{DICT_KEYS[d]: new[d] for d in DICTS}, "lab": list(labels)[before:]}
            if events:
                head["ev"] = events
            segment, self._layout = _segment(_arrays(idx), head, self._layout)
            with open(self.path, "r+b", buffering=0) as fh:  # never creates: chained only
                fh.seek(0, os.SEEK_END)  # the one writer (the store's lock), so no race here
                fh.write(segment)
        self.covered = end
        self.segments += 1
        self._file = self._identity()


def open_appender(log: Path) -> Appender | None:
    """The runner's index writer for ``log`` (None: the index cannot be kept; readers
    then fold the log as before)."""
    try:
        return Appender(log)
    except Exception:
        return None
