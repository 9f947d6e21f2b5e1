"""Text out of ``shadow-burnin mirror``: its progress/final line and its ready line
(plain strings; the command escapes each once with ``render.escape.term``)."""

from __future__ import annotations

from typing import Any


def summary_line(figures: dict[str, Any]) -> str:
    """One line of a session's figures (plain text: the caller escapes it once, at the
    output edge)."""
    p = figures["proxy"]
    buckets = " ".join(f"{b} {n}" for b, n in sorted(figures["buckets"].items())) or "-"
    return (f"mirror: {p['requests']} requests, {p['mirrored']} shadowed, "
                f"{p['dropped_full'] + p['dropped_shutdown']} dropped, {figures['rounds']} "
                f"rounds ({buckets})")


def ready_line(url: str, v1: str, v2: str, log: str) -> str:
    """The line a supervisor (and the tests) wait for: ``mirror listening on URL …``."""
    return (f"mirror listening on {url} (v1 {v1}, shadow {v2}, log {log})")
