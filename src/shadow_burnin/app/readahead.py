"""Start the round index's integrity check before the read path is imported.

A reading command's logs are known from its flags before click has even loaded the
command's module (and with it numpy, the configuration and the rest of the read path,
~0.1 s). :func:`check_early` starts each named log's index CRC on a thread meanwhile
(``io.log.indexcheck``); the index reader then compares the CRCs as always. Light:
imported by ``cli/__init__`` on every command.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from shadow_burnin.io.log.indexcheck import index_enabled, prefetch
from shadow_burnin.io.log.sidecars import index_path

READING = frozenset({"bench", "gates"})  # commands whose first act is reading the index
MAX_EARLY = 4  # logs checked early; a larger fleet's indexes are checked as they open
_GLOB = frozenset("*?[")


def log_flags(args: Sequence[str]) -> list[str]:
    """The values of ``--log`` in a command's arguments (``--log X`` or ``--log=X``), up
    to the first ``--``; a guess that may include a value that is not a log (it only
    decides what is read early)."""
    out: list[str] = []
    it = iter(args)
    for arg in it:
        if arg == "--":
            break
        if arg == "--log":
            value = next(it, None)
            if value is not None:
                out.append(value)
        elif arg.startswith("--log="):
            out.append(arg[len("--log="):])
    return out


def check_early(command: str, args: Sequence[str]) -> None:
    """Start the CRC of the index of each log ``command`` names in ``args`` (plain file
    names only: a glob is expanded later, by the command)."""
    if command not in READING or not index_enabled():
        return
    for spec in log_flags(args)[:MAX_EARLY]:
        if spec and not _GLOB.intersection(spec):
            prefetch(index_path(Path(spec)))
