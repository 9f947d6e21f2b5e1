"""A log read incrementally: the dashboard's and ``/metrics``' one reader.

``LiveLog.refresh()`` reads only the bytes appended since the last call, folds the new
complete lines into the same columns ``bench`` computes (``logscan``'s decoder and
column fold), and keeps what the web pages need beyond them: each round's number and
byte offset (to open a round page in one seek). Each side's error codes of its
unreachable rounds are counted from the columns (``Columns.error``: the round index
keeps them, so no line is read for them). A torn last
line (a ``run`` writing it) is left for the next refresh. A log that shrank or was
replaced is read again from the start.

This is the one place a later columnar index replaces: callers see ``columns``,
``other``, ``rounds``/``offsets`` and ``errors``.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from itertools import compress
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import orjson

from shadow_burnin.core.columns import ColumnBuilder, Columns, concat_columns, unreachable_errors
from shadow_burnin.core.columns import error_code as columns_error_code
from shadow_burnin.core.records import SCHEMA, SIDES
from shadow_burnin.core.sidetables import AATable
from shadow_burnin.errors import LogError
from shadow_burnin.io.log import legacy
from shadow_burnin.io.log.logscan import (
    AA_FIELDS,
    RoundRow,
    _aa_values,
    _columns,
    _fold_slow,
    _other,
    decode_line,
)

BLOCK_BYTES = 8 << 20
PARALLEL_MIN_BYTES = 64 << 20


class LiveRow(RoundRow, gc=False):
    aa: Any = None  # an A/A result kept inside its round (the newer layout)


def embedded_aa(record: Any) -> dict[str, Any] | None:
    """A round's ``"aa"`` result as the ``kind: aa`` record older logs carried."""
    aa = record.get("aa") if isinstance(record, dict) else getattr(record, "aa", None)
    if not isinstance(aa, dict):
        return None
    get = record.get if isinstance(record, dict) else (lambda k: getattr(record, k, None))
    out = {"kind": "aa", "schema": SCHEMA, "round": get("round"), "ts": get("ts"),
           "prompt_id": get("prompt_id"), "category": get("category")}
    out.update(aa)
    out["kind"] = "aa"
    return out


_DECODER = msgspec.json.Decoder(LiveRow)


ERROR_CODE_SHOWN = 40  # the dashboard's and /metrics' error codes, at most this long


def error_code(error: Any) -> str:
    """``"connection-refused: Connection refused"`` → ``"connection-refused"`` (at most
    40 characters; ``"unknown"`` for none)."""
    return (columns_error_code(error) or "unknown")[:ERROR_CODE_SHOWN]


def error_counts(columns: Columns) -> dict[str, Counter[str]]:
    """Per side, its unreachable rounds by error code (as :func:`error_code` names it),
    from the columns' error ids: no line is read."""
    out: dict[str, Counter[str]] = {s: Counter() for s in SIDES}
    for side, codes in unreachable_errors(columns).items():
        for code, n in codes.items():
            out[side][code[:ERROR_CODE_SHOWN]] += n
    return out


class Snapshot(msgspec.Struct):
    """What a reader has folded so far (shared, read-only for the caller)."""

    columns: Columns
    other: list[dict[str, Any]]
    rounds: np.ndarray  # round number per column row
    offsets: np.ndarray  # byte offset of that round's line
    errors: dict[str, Counter[str]]
    notes: list[str]
    version: int
    size: int
    # the A/A pairs the round index held (``other`` has those folded after it)
    aa: AATable | None = None


class LiveLog(msgspec.Struct, dict=True):  # dict: attributes may be set on one instance, as before
    path: Path
    _offset: int = 0
    _ino: int | None = None
    _parts: list[Columns] = msgspec.field(default_factory=list)
    _columns: Columns | None = None
    _other: list[dict[str, Any]] = msgspec.field(default_factory=list)
    _rounds: list[np.ndarray] = msgspec.field(default_factory=list)
    _offsets: list[np.ndarray] = msgspec.field(default_factory=list)
    _errors: tuple[int, dict[str, Counter[str]]] | None = None  # (version, counts)
    _version: int = 0
    bytes_read: int = 0  # what refreshes have read so far (tests, benchmark)
    _legacy: bool = False
    _notes: list[str] = msgspec.field(default_factory=list)
    _lock: threading.Lock = msgspec.field(default_factory=threading.Lock)
    _aa: AATable | None = None

    def _reset(self) -> None:
        self._offset, self._parts, self._columns, self._other = 0, [], None, []
        self._rounds, self._offsets = [], []
        self._errors = None
        self._notes = []
        self._aa = None
        self._version += 1

    def refresh(self) -> Snapshot:
        """Fold what was appended since the last call; LogError if missing/foreign."""
        with self._lock:
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                raise LogError(self.path, "no such log file (run `shadow-burnin run` "
                               "first, or pass --log)") from None
            except OSError as exc:
                raise LogError(self.path, f"cannot read: {exc.strerror}") from None
            if st.st_ino != self._ino or st.st_size < self._offset:
                self._reset()
                self._ino = st.st_ino
                self._legacy = st.st_size > 0 and legacy.is_legacy_log(self.path)
            if self._legacy:
                self._fold_legacy(st.st_size)
            elif self._offset == 0 and st.st_size > 0 and self._from_index():
                if st.st_size > self._offset:
                    self._read_new()
            elif (self._offset == 0 and st.st_size >= PARALLEL_MIN_BYTES
                  and threading.current_thread() is threading.main_thread()):
                # forking is safe only from the main thread (a server's worker thread
                # reads serially)
                self._read_parallel(st.st_size)
            elif st.st_size > self._offset:
                self._read_new()
            return self.snapshot()

    def _read_parallel(self, size: int) -> None:
        """A large log's first read: line-aligned byte ranges folded on every core (as
        ``bench`` does), joined in order; later refreshes read only new bytes."""
        workers = min(os.cpu_count() or 1, 8)
        if workers < 2:
            self._read_new()
            return
        bounds = [0]
        with open(self.path, "rb") as fh:
            for i in range(1, workers):
                fh.seek(max(bounds[-1], size * i // workers - 1))
                fh.readline()
                bounds.append(min(fh.tell(), size))
        ends: list[int | None] = [*bounds[1:], None]
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            parts = list(pool.map(_fold_part, [self.path] * workers, bounds, ends))
        for cols, other, rounds, offsets, offset, nbytes in parts:
            self._parts.extend(cols)
            self._other.extend(other)
            self._rounds.extend(rounds)
            self._offsets.extend(offsets)
            self._offset = offset
            self.bytes_read += nbytes
        self._columns = None
        self._version += 1

    def _from_index(self) -> bool:
        """The first read from the round index (``io.log.index``: columns, offsets and
        round numbers as saved, caught up from the log if it lacks lines): no JSON is
        parsed, no line is read (the error codes are columns). False: the index has
        nothing (a log without a complete line), read the log instead."""
        from shadow_burnin.io.log.index import detached, load

        if os.environ.get("SHADOW_BURNIN_INDEX", "on").lower() in ("off", "0", "no", "false"):
            return False
        idx = detached(load(self.path, parallel=threading.current_thread()
                            is threading.main_thread()))
        if not idx.covered:
            return False
        self._parts = [idx.columns] if len(idx.columns) else []
        self._rounds, self._offsets = [idx.rounds], [idx.offset]
        self._other = list(idx.other)  # inline events of older logs
        self._aa = idx.aa
        self._notes.extend(idx.notes)
        self._offset = idx.covered
        self._columns = None
        self._version += 1
        return True

    def snapshot(self) -> Snapshot:
        if self._columns is None:
            self._columns = concat_columns(self._parts)
            self._parts = [self._columns] if len(self._columns) else []
            self._rounds = [np.concatenate(self._rounds)] if self._rounds else []
            self._offsets = [np.concatenate(self._offsets)] if self._offsets else []
        rounds = self._rounds[0] if self._rounds else np.empty(0, np.int64)
        offsets = self._offsets[0] if self._offsets else np.empty(0, np.int64)
        if self._errors is None or self._errors[0] != self._version:
            self._errors = (self._version, error_counts(self._columns))
        return Snapshot(self._columns, self._other, rounds, offsets,
                        {s: Counter(c) for s, c in self._errors[1].items()},
                        list(self._notes), self._version, self._offset, self._aa)

    def _fold_legacy(self, size: int) -> None:
        if size == self._offset:
            return
        from shadow_burnin.io.log.logread import iter_records

        self._reset()
        builder = ColumnBuilder()
        records = [r for _n, _t, r in iter_records(self.path)]
        builder.add_all(records)
        self._parts = [builder.build()]
        self._rounds = [np.array([r.get("round", 0) for r in records], np.int64)]
        self._offsets = [np.full(len(records), -1, np.int64)]
        self._notes.append(legacy.NOTE)
        self._offset = size

    def _read_new(self, end: int | None = None) -> None:
        """Read from the offset to ``end`` (None: the end) once; fold whole lines; a torn
        tail stays unread (re-read by the next refresh, once complete)."""
        with open(self.path, "rb") as fh:
            fh.seek(self._offset)
            pending = b""
            pos = self._offset
            while end is None or pos < end:
                chunk = fh.read(BLOCK_BYTES if end is None else min(BLOCK_BYTES, end - pos))
                pos += len(chunk)
                self.bytes_read += len(chunk)
                if not chunk:
                    break
                buf = pending + chunk if pending else chunk
                n = buf.rfind(b"\n") + 1
                if not n:
                    pending = buf  # a line longer than a block, or a torn tail
                    continue
                self._fold(buf, n, self._offset)
                self._offset += n
                pending = buf[n:]
                self._columns = None
                self._version += 1
        if pending and self._offset == 0 and not pending.lstrip().startswith(b"{"):
            raise LogError(self.path, "not a shadow-burnin log (no complete line, and the "
                           "text is not a JSON record)")

    def _fold(self, buf: bytes, n: int, base: int) -> None:
        block = memoryview(buf)[:n]
        arr = np.frombuffer(block, dtype=np.uint8)
        ends = np.flatnonzero(arr == 10)
        starts = np.concatenate(([0], ends[:-1] + 1)).astype(np.int64)
        blank = (ends - starts) == 0
        if blank.any():  # empty lines are skipped by the decoder (a line of only spaces
            # makes the counts differ: the line-by-line fold takes that block)
            keep = np.array([bool(bytes(block[a:b]).strip()) for a, b in zip(starts, ends,
                                                                             strict=True)],
                            dtype=bool)
            starts, ends = starts[keep], ends[keep]
        try:
            rows = _DECODER.decode_lines(block)
            is_round = [r.kind is None or r.kind == "round" for r in rows]
            rounds = list(compress(rows, is_round))
            columns = _columns(rounds)  # type: ignore[arg-type]
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
            columns = None
        if columns is None or len(rows) != len(starts):
            self._fold_slowly(buf, n, base)
            return
        mask = np.array(is_round, bool)
        self._parts.append(columns)
        self._rounds.append(np.fromiter((r.round or 0 for r in rounds), np.int64,
                                        len(rounds)))
        self._offsets.append(base + starts[mask])
        for r in rounds:
            if r.aa is not None:
                aa = embedded_aa(r)
                if aa is not None:
                    self._other.append(aa)
        if not mask.all():
            for i in np.flatnonzero(~mask):
                row = rows[i]
                if row.kind == "aa":
                    self._other.append(dict(zip(AA_FIELDS, _aa_values(row), strict=True)))
                else:  # an event (older logs carried them inline): whole
                    self._other.append(_other(orjson.loads(bytes(block[starts[i]:ends[i]]))))

    def _fold_slowly(self, buf: bytes, n: int, base: int) -> None:
        """Line by line: names a bad line (LogError), else the same columns."""
        before = self._lines_before(base)
        builder = ColumnBuilder()
        other: list[dict[str, Any]] = []
        _fold_slow(self.path, buf[:n], lambda: before, builder, other)
        columns = builder.build()
        nums, offs = [], []
        pos = 0
        for raw in buf[:n].split(b"\n")[:-1]:
            here, pos = pos, pos + len(raw) + 1
            if not raw.strip():
                continue
            rec = decode_line(raw, partial(LogError, self.path))
            if rec.get("kind") in (None, "round") and rec.get("schema") == SCHEMA:
                nums.append(int(rec.get("round") or 0))
                offs.append(base + here)
                aa = embedded_aa(rec)
                if aa is not None:
                    other.append(aa)
        self._parts.append(columns)
        self._other.extend(other)
        self._rounds.append(np.array(nums, np.int64))
        self._offsets.append(np.array(offs, np.int64))

    def _lines_before(self, offset: int) -> int:
        lines = 0
        with open(self.path, "rb") as fh:
            while fh.tell() < offset:
                chunk = fh.read(min(offset - fh.tell(), BLOCK_BYTES))
                if not chunk:
                    break
                lines += chunk.count(b"\n")
        return lines

    def read_round(self, number: int) -> dict[str, Any] | None:
        """The whole record of round ``number`` (one seek), None if there is none."""
        snap = self.snapshot()
        hits = np.flatnonzero(snap.rounds == number)
        if not hits.size:
            return None
        off = int(snap.offsets[hits[-1]])
        if off < 0:  # legacy log: no offsets
            from shadow_burnin.io.log.logread import find_round

            return find_round(self.path, number)
        with open(self.path, "rb") as fh:
            fh.seek(off)
            line = fh.readline()
        return decode_line(line, partial(LogError, self.path))


def _fold_part(path: Path, start: int, end: int | None) -> tuple[Any, ...]:
    """A worker's share of a first read: the lines that start in [start, end)."""
    live = LiveLog(path)
    live._offset = start
    live._read_new(end)
    return (live._parts, live._other, live._rounds, live._offsets, live._offset,
            live.bytes_read)
