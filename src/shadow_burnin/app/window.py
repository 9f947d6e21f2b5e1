"""The ``--since``/``--until`` time window of the reading commands, made once (the CLI
and the web app pass the raw flag values here)."""

from __future__ import annotations

from shadow_burnin.errors import ConfigError
from shadow_burnin.io.log.logread import Window, parse_time

__all__ = ["Window", "make_window"]


def make_window(since: str | None, until: str | None) -> Window:
    """The ``--since``/``--until`` window; an empty value or an empty window (since at
    or after until) is refused rather than silently matching everything or nothing."""
    for flag, value in (("--since", since), ("--until", until)):
        if value is not None and not value.strip():
            raise ConfigError(None, f"{flag}: empty; give an ISO-8601 time or leave it out")
    try:
        lo = parse_time(since, "--since").timestamp() if since else None
        hi = parse_time(until, "--until").timestamp() if until else None
    except ValueError as exc:
        raise ConfigError(None, str(exc)) from None
    if lo is not None and hi is not None and lo >= hi:
        raise ConfigError(None, "--since must be before --until (the window is empty)")
    return Window(since=lo, until=hi)
