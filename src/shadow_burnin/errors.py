"""The exception tree, drawn once.

    ShadowBurninError            anything the harness itself refuses to do
     ├── InputError              a file or flag the user gave is wrong (exit 2)
     │    ├── ConfigError        TOML config / command-line values
     │    ├── PromptFileError    a prompts JSONL file
     │    ├── StateError         the state file (corrupt, other setup)
     │    └── LogError           the JSONL log (not ours, unreadable)
     ├── LockedError             another `run` holds the log/state lock (exit 2)
     ├── SetupChangedError       restart with a different setup fingerprint (exit 2)
     ├── StorageError            the log/state could not be written (disk full …) (exit 2)
     ├── ServerStartError        a local demo/test server did not come up (exit 2)
     ├── ProxyError              Caddy's admin API unreachable, refusing or rejecting a
     │                           change, the route missing/ambiguous (exit 2, nothing changed)
     └── PplError                a server could not be scored by ``ppl`` (exit 2;
                                 defined in ``io.ppl.scoring``)

Errors from a *server* are never exceptions here: they are outcomes recorded in the
round (``SideReply.error``). The CLI maps every ShadowBurninError to one line on
stderr and exit status 2; nothing else is caught there.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any


class ShadowBurninError(Exception):
    """Base class: something the harness refuses to do; message is one line."""

    exit_code = 2


class InputError(ShadowBurninError):
    """A user-supplied file or value is wrong. Names the file, line and field."""

    def __init__(self, path: str | Path | None, message: str, *, line: int | None = None):
        self.path = str(path) if path is not None else None
        self.line = line
        self.detail = message
        where = ""
        if self.path is not None:
            where = self.path if line is None else f"{self.path}:{line}"
            where += ": "
        super().__init__(f"{where}{message}")

    def __reduce__(self) -> tuple[Any, ...]:
        # picklable, e.g. raised in a worker process of a parallel log scan
        return (partial(type(self), line=self.line), (self.path, self.detail))


class ConfigError(InputError):
    """The TOML configuration or a command-line value is invalid."""


class PromptFileError(InputError):
    """A prompts file is invalid (line number given where known)."""


class StateError(InputError):
    """The state file is corrupt, unreadable, or belongs to another setup."""


class LogError(InputError):
    """The log is unreadable or not a shadow-burnin (or legacy) log."""


class LockedError(ShadowBurninError):
    """Another process holds the lock on this log/state pair."""


class SetupChangedError(ShadowBurninError):
    """The state was written by a different setup (URLs, models, request)."""


class StorageError(ShadowBurninError):
    """Writing the log or state failed (e.g. ENOSPC); files are left valid."""


class ServerStartError(ShadowBurninError):
    """A local server (demo, tests) failed to start; the message ends with its log tail."""


class ProxyError(ShadowBurninError):
    """Caddy's admin API could not be used, or its config is not what a cutover expects;
    raised before anything was changed (or when Caddy refused the change)."""
