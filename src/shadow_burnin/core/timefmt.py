"""Timestamp formatting, pure and defined once (the clock is read in ``io``/``app``).

- :func:`iso_ms` — the log's own form, ``2026-04-22T08:59:45.123Z`` (UTC, milliseconds);
- :func:`human` — for tables and documents, ``2026-04-22 08:59:45Z``;
- :func:`stamp` — for file names, ``20260422T085945Z``;
- :func:`iso_s` — pages and JSON views, ``2026-04-22T08:59:45Z`` (None for no time).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime


def _utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def iso_ms(t: float) -> str:
    """Epoch seconds → ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (milliseconds truncated)."""
    d = _utc(t)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"


def human(t: float | None) -> str:
    """Epoch seconds → ``YYYY-MM-DD HH:MM:SSZ``; ``—`` for None."""
    return "—" if t is None else _utc(t).strftime("%Y-%m-%d %H:%M:%SZ")


def stamp(t: float) -> str:
    """Epoch seconds → ``YYYYMMDDTHHMMSSZ`` (for archive file names)."""
    return _utc(t).strftime("%Y%m%dT%H%M%SZ")


def iso_s(t: float | None) -> str | None:
    """Epoch seconds → ``YYYY-MM-DDTHH:MM:SSZ``; None for None or a non-finite time."""
    if t is None or not math.isfinite(t):
        return None
    return _utc(t).strftime("%Y-%m-%dT%H:%M:%SZ")
