"""Opening files the user named: the OS errors mapped once to one-line InputErrors."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from shadow_burnin.errors import InputError


def open_input(path: str | Path, error: type[InputError], kind: str) -> BinaryIO:
    """Open ``path`` for binary reading; a missing file, a directory or a permission
    problem raises ``error`` naming the path (``kind``: "config", "log", …)."""
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise error(path, f"no such {kind} file") from None
    except IsADirectoryError:
        raise error(path, f"is a directory, not a {kind} file") from None
    except PermissionError:
        raise error(path, "permission denied") from None


def read_input(path: str | Path, error: type[InputError], kind: str) -> bytes:
    """The whole file, with ``open_input``'s errors."""
    with open_input(path, error, kind) as fh:
        return fh.read()
