"""The wall clock, in the log's timestamp format (the one place that reads it)."""

from __future__ import annotations

import time

from shadow_burnin.core.halt import iso


def now_iso() -> str:
    """``YYYY-MM-DDTHH:MM:SS.mmmZ`` in UTC, milliseconds truncated (the log's format)."""
    return iso(time.time())
