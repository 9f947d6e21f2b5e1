"""Log rotation (``run --rotate 1GB`` / ``--rotate daily``, ``[run] rotate``).

The live log keeps its name (``burnin.jsonl``: every command, the lock, the state and the
events file stay where they were); a closed segment is ``burnin.jsonl.00001``,
``.00002``, … (``logset.segment_path``), each with its own round index beside it. Rounds
keep their numbers across segments, and ``wc -l burnin.jsonl*`` over the segments and the
live log counts the rounds (the side files do not end in digits and are not JSONL rounds:
``wc -l burnin.jsonl burnin.jsonl.[0-9]*`` is the exact count).

Rotation happens in the store's commit path, before a batch is written, never inside one:

1. ``link(burnin.jsonl, burnin.jsonl.0000k)`` — the closed name now exists, same file;
2. the live index, if any, is renamed to the segment's index (it describes those bytes);
3. an empty file is renamed over ``burnin.jsonl`` (atomic): the live log is new;
4. the state records ``segments = k`` and the live log's size 0.

A kill -9 between any two steps loses nothing: after 1 the segment and the live log are
one file (readers count it once: ``logset.segments`` drops a live log that is the last
segment; ``Store.open`` finishes the rotation); after 3 the state is behind (it knows
``k − 1`` segments) and catches up from the new segment and the live log.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from shadow_burnin.io.log.logset import segment_path
from shadow_burnin.io.log.sidecars import fsync_dir, index_path

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B?)\s*$", re.I)
_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2,
          "mib": 1024**2, "g": 1000**3, "gb": 1000**3, "gib": 1024**3, "t": 1000**4,
          "tb": 1000**4, "tib": 1024**4}
MIN_BYTES = 4096  # a smaller limit would rotate on nearly every batch


class Rotation(msgspec.Struct, frozen=True):
    """When to close the live segment: over ``max_bytes``, and/or at a new UTC day (of
    the rounds' own timestamps, not the clock)."""

    max_bytes: int | None = None
    daily: bool = False

    def due(self, live_size: int, live_day: str | None, batch_bytes: int,
            batch_day: str | None) -> bool:
        """Close the live segment before this batch? Never when it is empty."""
        if live_size == 0:
            return False
        if self.max_bytes is not None and live_size + batch_bytes > self.max_bytes:
            return True
        return self.daily and live_day is not None and batch_day is not None \
            and batch_day != live_day

    def describe(self) -> str:
        parts = [f"{self.max_bytes:,} bytes"] if self.max_bytes is not None else []
        if self.daily:
            parts.append("daily (UTC)")
        return " or ".join(parts)


def parse_rotate(text: str, what: str = "--rotate") -> Rotation:
    """``1GB``, ``500MB``, ``2GiB``, ``daily`` (ValueError naming ``what`` otherwise)."""
    value = text.strip().lower()
    if value == "daily":
        return Rotation(daily=True)
    m = _SIZE.match(value)
    if m is None or m.group(2).lower() not in _UNITS:
        raise ValueError(f"{what}: give a size such as 1GB or 500MB, or 'daily'; "
                         f"got {text!r}")
    size = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if size < MIN_BYTES:
        raise ValueError(f"{what}: at least {MIN_BYTES} bytes, got {text!r}")
    return Rotation(max_bytes=size)


def rotation_of(cfg: Any) -> Rotation | None:
    """``[run] rotate`` of a config (validated when it was loaded) as the store's rule."""
    text = getattr(getattr(cfg, "run", None), "rotate", None)
    return parse_rotate(text, "run.rotate") if text else None


def day_of(ts: object) -> str | None:
    """The UTC day (``YYYY-MM-DD``) of a round's ``ts`` (None if it has none)."""
    if not isinstance(ts, str):
        return None
    try:
        t = datetime.fromisoformat(ts)
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC).date().isoformat()


def close_segment(log: Path, number: int) -> Path:
    """Steps 1–3 (see the module text): ``log`` becomes segment ``number`` and a new
    empty live log takes its name. Idempotent after a crash at any step."""
    segment = segment_path(log, number)
    if not segment.exists():
        os.link(log, segment)
        fsync_dir(log.parent)
    finish_rotation(log, segment)
    return segment


def finish_rotation(log: Path, segment: Path) -> None:
    """Steps 2–3 for a segment already linked (a no-op once the live log is new)."""
    try:
        same = os.path.samefile(log, segment)
    except FileNotFoundError:
        same = False
    idx, seg_idx = index_path(log), index_path(segment)
    if same and idx.exists() and not seg_idx.exists():
        os.replace(idx, seg_idx)
    if same or not log.exists():
        tmp = log.with_name(log.name + ".rotating")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, log)
        fsync_dir(log.parent)
