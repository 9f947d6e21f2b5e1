"""``bench``'s hot path: a byte range of our own log folded into columns.

The range is read in blocks of whole lines. Each block is decoded in one call by msgspec
into small row structs holding only the fields a summary needs: the reply texts, by far
the largest part of a line, are skipped without being decoded (whether a side replied is
read from the round's bucket, see ``core.columns``). A block the fast decoder cannot take
as it is (a line that is not JSON, a field of an unexpected type, a record that is not
ours) is folded again line by line with orjson, which either accepts it or raises a
``LogError`` naming the line: the two paths give the same columns (a test holds them to
it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from itertools import compress, repeat
from operator import attrgetter, is_not
from pathlib import Path
from typing import Any, BinaryIO

import msgspec
import numpy as np
import orjson

from shadow_burnin.core.columns import BUCKET_CODE, ColumnBuilder, Columns, part
from shadow_burnin.core.outcomes import forensic_codes
from shadow_burnin.core.records import SCHEMA, SIDES, RecordKind, aa_record, record_kind
from shadow_burnin.errors import LogError
from shadow_burnin.io.log.lines import decode_line, open_log

BLOCK_BYTES = 8 << 20


class SideRow(msgspec.Struct, gc=False):
    """One side of a round, as much of it as a summary reads: its two figures (whether
    it replied is in the round's bucket; its text is skipped unread), and its status,
    completion tokens and error as logged (any JSON value: ``core.columns`` keeps what
    has the expected type, so the line-by-line fold gives the same columns)."""

    latency_ms: float | None = None
    ttft_ms: float | None = None
    status: Any = None
    completion_tokens: Any = None
    error: Any = None


class AARow(msgspec.Struct, gc=False):
    """An A/A pair inside its round (``"aa"``), as much of it as reports read (its two
    replies are skipped unread)."""

    ts: str | None = None
    target: str | None = None
    bucket: str | None = None
    forensics: Any = None
    noise: Any = None


class RoundRow(msgspec.Struct, gc=False):
    """A log record, as much of it as a summary reads (an event is re-read whole).

    Untracked by the garbage collector (``gc=False``: the rows hold no cycles), which
    matters when a block decodes into thousands of them.
    """

    kind: str | None = None
    schema: int | None = None
    ts: str | None = None
    bucket: str | None = None
    category: str | None = ""
    prompt_id: str | None = ""
    prefix_match_chars: float | None = None
    source: str | None = None
    round: int | None = None  # of an A/A record
    target: str | None = None
    noise: Any = None
    forensics: Any = None
    refire: Any = None
    tokstats: Any = None
    v1: SideRow | None = None
    v2: SideRow | None = None
    aa: AARow | None = None


_DECODER = msgspec.json.Decoder(RoundRow)
_get_aa = attrgetter("aa")


def scan_range(path: Path, start: int, end: int | None
               ) -> tuple[Columns, list[dict[str, Any]], int]:
    """Fold the lines that *start* in [start, end) (``end`` None: to the end of the file).

    Returns the columns, the non-round records in order, and how many rounds were
    imported from the earlier tool. A ``LogError`` names the file's own line number,
    whatever ``start`` is. A torn last line is not a round yet.
    """
    columns, other, imported, _stop, _offsets = scan_range_at(path, start, end, None)
    return columns, other, imported


def scan_range_at(path: Path, start: int, end: int | None, offsets: list[np.ndarray] | None
                  ) -> tuple[Columns, list[dict[str, Any]], int, int, np.ndarray]:
    """:func:`scan_range`, plus where the folded lines end and (``offsets`` a list to
    fill) each round line's byte offset, length (without its newline) and round number
    (0: none) in the file, in round order, as a 3×n array (the round index keeps them)."""
    builder = ColumnBuilder()
    other: list[dict[str, Any]] = []
    imported = 0
    stop = start
    with open_log(path) as fh:
        for offset, buf, n in _blocks(fh, start, end):
            imported += _fold(path, buf, n, partial(_lines_before, path, offset), builder, other,
                              offsets, offset)
            stop = offset + n
    found = np.concatenate(offsets, axis=1) if offsets else np.empty((3, 0), np.int64)
    return builder.build(), other, imported, stop, found


def _line_starts(buf: bytes, n: int, rows: int) -> np.ndarray:
    """Start and length of each non-blank line of ``buf[:n]`` (the lines ``decode_lines``
    decodes), as a 2×n array."""
    nl = np.flatnonzero(np.frombuffer(buf, np.uint8, n) == 10)
    starts = np.concatenate(([0], nl[:-1] + 1)).astype(np.int64)
    filled = nl - starts > 0
    if int(filled.sum()) != rows:  # whitespace-only lines: ask each line
        filled = np.array([bool(buf[a:b].strip()) for a, b in zip(starts, nl, strict=True)],
                          dtype=bool)
    return np.stack((starts[filled], (nl - starts)[filled]))


def _lines_before(path: Path, offset: int) -> int:
    """How many lines the file has before byte ``offset`` (counted only for an error)."""
    lines = 0
    with path.open("rb") as fh:
        while fh.tell() < offset:
            chunk = fh.read(min(offset - fh.tell(), BLOCK_BYTES))
            if not chunk:
                break
            lines += chunk.count(b"\n")
    return lines


def _blocks(fh: BinaryIO, start: int, end: int | None) -> Iterator[tuple[int, bytes, int]]:
    """``(offset, buf, n)``: ``buf[:n]`` is a block of whole lines at ``offset`` in the file.

    Each read starts at the first byte not yet yielded (no copying of partial lines); a
    line longer than a block doubles the read.
    """
    if start:
        fh.seek(start - 1)
        start = start - 1 + len(fh.readline())  # the line that began before us is not ours
    pos, size = start, BLOCK_BYTES
    while end is None or pos < end:
        fh.seek(pos)
        buf = fh.read(size)
        at_eof = len(buf) < size
        if end is not None and pos + len(buf) >= end:
            # lines that start before ``end`` are ours, the last one up to its newline
            cut = buf.find(b"\n", end - pos - 1)
            if cut >= 0:
                yield pos, buf, cut + 1
                return
        cut = buf.rfind(b"\n") + 1
        if cut:
            yield pos, buf, cut
            pos, size = pos + cut, BLOCK_BYTES
        elif at_eof:
            return  # what is left after the last newline is a torn line, not a round
        else:
            size *= 2


def _fold(path: Path, buf: bytes, n: int, first_line: Callable[[], int],
          builder: ColumnBuilder, other: list[dict[str, Any]],
          offsets: list[np.ndarray] | None = None, at: int = 0) -> int:
    try:
        rows = _DECODER.decode_lines(memoryview(buf)[:n])
        rounds = [r for r in rows if r.kind is None or r.kind == "round"]
        columns = _columns(rounds)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
        columns = None
    if columns is None:
        return _fold_slow(path, buf[:n], first_line, builder, other, offsets, at)
    builder.add_part(columns)
    if offsets is not None:
        where = _line_starts(buf, n, len(rows))
        where[0] += at
        if len(rounds) != len(rows):
            where = where[:, [r.kind is None or r.kind == "round" for r in rows]]
        numbers = np.fromiter((r.round if type(r.round) is int else 0 for r in rounds),
                              np.int64, len(rounds))
        offsets.append(np.vstack((where, numbers)))
    with_pair = list(map(is_not, map(_get_aa, rounds), repeat(None)))
    if len(rounds) == len(rows):  # this version's layout: pairs inside their rounds
        if any(with_pair):
            other.extend(map(_embedded, compress(rounds, with_pair)))
    else:  # inline A/A lines or events (an older log): kept in log order
        needs_lines = any(r.kind is not None and r.kind not in ("round", "aa") for r in rows)
        lines = [line for line in buf[:n].split(b"\n") if line.strip()] if needs_lines \
            else []
        for i, r in enumerate(rows):
            if r.kind is None or r.kind == "round":
                if r.aa is not None:
                    other.append(_embedded(r))
            elif r.kind == "aa":
                other.append(dict(zip(AA_FIELDS, _aa_values(r), strict=True)))
            else:  # an event: whole, from its line
                other.append(_other(orjson.loads(lines[i])))
    return sum(r.source == "legacy" for r in rounds if r.source is not None)


def _columns(rounds: list[RoundRow]) -> Columns | None:
    """The rows' columns, as ``ColumnBuilder.add_all`` folds the same records; None for a
    row that is not a round of ours (the line-by-line fold then names it).

    Every field is pulled out with ``map`` and ``attrgetter`` (loops in C: this runs once
    per round of the log); a missing side raises AttributeError through its getter.
    """
    n = len(rounds)

    def column(name: str) -> list[Any]:
        return list(map(attrgetter(name), rounds))

    buckets = list(map(BUCKET_CODE.get, column("bucket")))
    stamps = column("ts")
    if None in buckets or None in stamps or column("schema").count(SCHEMA) != n:
        return None
    try:
        latency = {side: column(f"{side}.latency_ms") for side in SIDES}
        ttft = {side: column(f"{side}.ttft_ms") for side in SIDES}
        status = {side: column(f"{side}.status") for side in SIDES}
        tokens = {side: column(f"{side}.completion_tokens") for side in SIDES}
        error = {side: column(f"{side}.error") for side in SIDES}
    except AttributeError:
        return None  # a round without a side
    forensics, refires = column("forensics"), column("refire")
    with_fx = np.flatnonzero(
        np.fromiter(map(is_not, forensics, repeat(None)), bool, n)
        | np.fromiter(map(is_not, refires, repeat(None)), bool, n))
    fx = {int(i): forensic_codes(forensics[i], refires[i]) for i in with_fx}
    codes = [b for b in buckets if b is not None]  # all are (checked above)
    return part(codes, latency, ttft,
                np.array(column("prefix_match_chars"), float),
                column("category"), column("prompt_id"), stamps, fx, _tokstats(rounds),
                status, tokens, error)


def _tokstats(rounds: list[RoundRow]) -> dict[int, Any]:
    """Rows with a ``tokstats`` object (core.columns reads the numbers)."""
    stats = list(map(attrgetter("tokstats"), rounds))
    if stats.count(None) == len(stats):
        return {}
    return {i: s for i, s in enumerate(stats) if s is not None}


# what reports read of an A/A record (``core.aa``: summarise_aa, NoiseSamples), i.e.
# all of it but the two replies; each must be a field of RoundRow
AA_FIELDS = ("kind", "schema", "round", "ts", "prompt_id", "category", "target", "bucket",
             "forensics", "noise")
assert set(AA_FIELDS) <= set(RoundRow.__struct_fields__)
_aa_values = attrgetter(*AA_FIELDS)
_AA_MISSING = {k: getattr(RoundRow(), k) for k in AA_FIELDS}  # what a missing field reads as


def _embedded(row: RoundRow) -> dict[str, Any]:
    """The A/A pair of a round row, as an A/A record without its replies."""
    aa = row.aa
    assert aa is not None
    return {"kind": "aa", "schema": row.schema, "round": row.round, "ts": aa.ts,
            "prompt_id": row.prompt_id, "category": row.category, "target": aa.target,
            "bucket": aa.bucket, "forensics": aa.forensics, "noise": aa.noise}


def _other(record: dict[str, Any]) -> dict[str, Any]:
    """A non-round record as scans hand it on: events whole, A/A records without replies."""
    if record_kind(record) is RecordKind.AA:
        return {k: record.get(k, _AA_MISSING[k]) for k in AA_FIELDS}
    return record


def _fold_slow(path: Path, block: bytes, first_line: Callable[[], int],
               builder: ColumnBuilder, other: list[dict[str, Any]],
               offsets: list[np.ndarray] | None = None, base: int = 0) -> int:
    """Line by line, for the exact error: the reference the fast path is held to."""
    at = [0, 0]  # [line number in the block, imported legacy rounds]
    found: list[tuple[int, int, int]] = []

    def fail(reason: str) -> LogError:
        return LogError(path, reason, line=first_line() + at[0])

    def rounds() -> Iterator[dict[str, Any]]:
        pos = base
        for line in block.split(b"\n")[:-1]:
            at[0] += 1
            start, pos = pos, pos + len(line) + 1
            if not line.strip():
                continue
            record = decode_line(line, fail)
            if record_kind(record) is RecordKind.ROUND:
                if record.get("schema") != SCHEMA:
                    raise fail("not a shadow-burnin round record")
                if "source" in record:
                    at[1] += record["source"] == "legacy"
                number = record.get("round")
                found.append((start, len(line), number if type(number) is int else 0))
                yield record
                aa = aa_record(record)
                if aa is not None:
                    other.append(_other(aa))
            else:
                other.append(_other(record))

    try:
        builder.add_all(rounds())
    except (KeyError, TypeError, AttributeError):
        raise fail("not a shadow-burnin round record (fields)") from None
    except ValueError:
        raise fail("record has no valid 'ts'") from None
    if offsets is not None:
        offsets.append(np.array(found, dtype=np.int64).reshape(-1, 3).T)
    return at[1]
