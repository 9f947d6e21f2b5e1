"""Acknowledging a no-match halt (``ack-halt``).

The acknowledgement is one ``ack-halt`` event appended to ``<log>.events.jsonl`` (one
``O_APPEND`` write + fsync, ``io.log.events.append_event``), whether or not a ``run``
holds the log: no request file, no waiting. A running burn-in's halt watch tails that
file at each commit and learns of the acknowledgement there; ``gates`` reads it the same
way. The reason is stored as given; every output escapes it for its medium.
"""

from __future__ import annotations

import fcntl
import getpass
import os
from pathlib import Path
from typing import Any

import msgspec

from shadow_burnin.app.files import require_log
from shadow_burnin.core.halt import ack_event, halt_status
from shadow_burnin.errors import ConfigError
from shadow_burnin.io.clock import now_iso
from shadow_burnin.io.log.events import append_event, read_events
from shadow_burnin.io.log.sidecars import lock_path
from shadow_burnin.io.run.haltwatch import log_events

MAX_REASON_CHARS = 2000


class AckResult(msgspec.Struct, frozen=True):
    acknowledged: bool
    halt: dict[str, Any]
    reason: str
    running: bool  # a run holds the log (its halt watch picks the event up)


def run_holds(log: Path) -> bool:
    """True when a ``run`` holds the log's lock (probed without creating the lock)."""
    try:
        fd = os.open(lock_path(log), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
    return False


def current_user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None


def acknowledge(log: str | Path, reason: str, by: str | None = None, *,
                ts: str | None = None) -> AckResult:
    """Append the ``ack-halt`` event for the active halt (nothing when none is active)."""
    path = require_log(log)
    reason = reason.strip()
    if not reason:
        raise ConfigError(None, "--reason must say why the halt is acknowledged")
    if len(reason) > MAX_REASON_CHARS:
        raise ConfigError(None, f"--reason is longer than {MAX_REASON_CHARS} characters")
    status = halt_status(read_events(path, inline=log_events(path)))
    halt = status.halt or {}
    if not status.active:
        return AckResult(False, halt, reason, run_holds(path))
    append_event(path, ack_event(ts or now_iso(), reason, halt, by or current_user()))
    return AckResult(True, halt, reason, run_holds(path))
