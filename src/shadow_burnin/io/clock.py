"""The wall clock: the one place the package reads it (``core`` only formats times)."""

from __future__ import annotations

import time

from shadow_burnin.core.timefmt import iso_ms, stamp


def now_iso() -> str:
    """Now in the log's timestamp form (``…T08:59:45.123Z``, UTC, milliseconds truncated)."""
    return iso_ms(time.time())


def now_stamp() -> str:
    """Now for a file name (``20260422T085945Z``)."""
    return stamp(time.time())
