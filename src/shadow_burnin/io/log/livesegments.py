"""The dashboard's incremental reader (``livescan.LiveLog``) across a rotated log.

One ``LiveLog`` per closed segment (a closed segment no longer changes: after its first
read a refresh is one ``stat``) and one on the live log; their snapshots joined in round
order. A log never rotated is read by its one ``LiveLog`` exactly as before.
"""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from shadow_burnin.core.columns import concat_columns
from shadow_burnin.core.records import SIDES
from shadow_burnin.core.sidetables import join_aa
from shadow_burnin.io.log.livescan import LiveLog, Snapshot
from shadow_burnin.io.log.logset import segments


class LiveSegments:
    """``refresh()`` → one :class:`Snapshot` of every segment; ``read_round(n)``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._readers: dict[Path, LiveLog] = {}
        self._key: tuple[Any, ...] | None = None
        self._snap: Snapshot | None = None
        self._version = 0
        self._rows: list[tuple[Path, int]] = []  # (segment, rows) in order
        self._lock = threading.Lock()

    def _reader(self, p: Path) -> LiveLog:
        reader = self._readers.get(p)
        if reader is None:
            reader = self._readers[p] = LiveLog(p)
        return reader

    def refresh(self) -> Snapshot:
        with self._lock:
            parts = segments(self.path)
            if len(parts) == 1 and parts[0] == self.path:
                return self._reader(self.path).refresh()
            snaps = [(p, self._reader(p).refresh()) for p in parts]
            for gone in set(self._readers) - set(parts):
                del self._readers[gone]
            key = tuple((str(p), s.version, s.size) for p, s in snaps)
            if key != self._key or self._snap is None:
                self._key = key
                self._version += 1
                self._snap = self._join([s for _p, s in snaps])
                self._rows = [(p, len(s.columns)) for p, s in snaps]
            return self._snap

    def _join(self, snaps: list[Snapshot]) -> Snapshot:
        errors: dict[str, Counter[str]] = {s: Counter() for s in SIDES}
        for s in snaps:
            for side in SIDES:
                errors[side].update(s.errors.get(side, Counter()))
        return Snapshot(
            columns=concat_columns([s.columns for s in snaps]),
            other=sorted((r for s in snaps for r in s.other),
                         key=lambda r: str(r.get("ts", ""))),
            rounds=np.concatenate([s.rounds for s in snaps]) if snaps else np.empty(0, np.int64),
            offsets=np.concatenate([s.offsets for s in snaps]) if snaps else np.empty(0,
                                                                                    np.int64),
            errors=errors, notes=list(dict.fromkeys(n for s in snaps for n in s.notes)),
            version=self._version, size=sum(s.size for s in snaps),
            aa=join_aa([s.aa for s in snaps if s.aa is not None])
            if any(s.aa is not None for s in snaps) else None)

    def read_round(self, number: int) -> dict[str, Any] | None:
        """The whole record of round ``number``, from the segment that holds it."""
        self.refresh()
        for p in reversed(list(self._readers)):
            reader = self._readers[p]
            snap = reader.snapshot()
            if snap.rounds.size and snap.rounds[0] <= number:
                found = reader.read_round(number)
                if found is not None:
                    return found
        return None
