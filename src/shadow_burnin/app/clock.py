"""The one place ``app`` reads the wall clock (``core`` only formats times)."""

from __future__ import annotations

import time

from shadow_burnin.core.timefmt import iso_ms, stamp


def now_iso() -> str:
    """Now in the log's timestamp form (``…T08:59:45.123Z``)."""
    return iso_ms(time.time())


def now_stamp() -> str:
    """Now for a file name (``20260422T085945Z``)."""
    return stamp(time.time())
