"""Opening files the user named, in ONE place: every reader of a config, prompts file,
log, state or text to score goes through :func:`open_input` / :func:`read_input`.

- the file is opened with ``O_NONBLOCK`` (a FIFO opens at once instead of waiting for a
  writer), then ``fstat``-ed: anything that is not a regular file (a directory, a FIFO, a
  socket, a device such as ``/dev/zero``) is refused before a byte is read;
- whole-file reads are capped (:data:`CONFIG_MAX_BYTES`, :data:`PROMPTS_MAX_BYTES`, …),
  so a huge or growing file cannot exhaust memory;
- OS errors become one-line ``InputError`` subclasses naming the path.

:func:`check_input` is the same test for a path that may not exist yet (``run --log``
validates the log and the state before it creates a lock or any side file).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

from shadow_burnin.errors import InputError

MiB = 1024 * 1024
CONFIG_MAX_BYTES = 1 * MiB
PROMPTS_MAX_BYTES = 256 * MiB
STATE_MAX_BYTES = 256 * MiB
TEXT_MAX_BYTES = 256 * MiB  # ``ppl --text``
LEGACY_STATE_MAX_BYTES = 1 * MiB


def _kind_of(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    return "not a regular file"


def _refuse(path: str | Path, error: type[InputError], kind: str, mode: int) -> InputError:
    what = _kind_of(mode)
    if what == "a directory":
        return error(path, f"is a directory, not a {kind} file")
    return error(path, f"is {what}, not a regular {kind} file")


def _size_error(path: str | Path, error: type[InputError], kind: str,
                max_bytes: int) -> InputError:
    return error(path, f"{kind} file is larger than {_human(max_bytes)} (the limit for a "
                 f"{kind} file)")


def _human(n: int) -> str:
    return f"{n // MiB} MiB" if n % MiB == 0 else f"{n:,} bytes"


def open_input(path: str | Path, error: type[InputError], kind: str, *,
               max_bytes: int | None = None) -> BinaryIO:
    """Open a regular file for binary reading; anything else raises ``error`` naming the
    path (``kind``: "config", "log", …). ``max_bytes``: refuse a larger file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise error(path, f"no such {kind} file") from None
    except PermissionError:
        raise error(path, "permission denied") from None
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a socket (or a device without a driver)
            with contextlib.suppress(OSError):
                raise _refuse(path, error, kind, os.stat(path).st_mode) from None
        if exc.errno == errno.ENOTDIR:
            raise error(path, "a parent is a file, not a directory") from None
        raise error(path, f"cannot open: {exc.strerror or type(exc).__name__}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _refuse(path, error, kind, st.st_mode)
        if max_bytes is not None and st.st_size > max_bytes:
            raise _size_error(path, error, kind, max_bytes)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_input(path: str | Path, error: type[InputError], kind: str, *,
               max_bytes: int) -> bytes:
    """The whole file (at most ``max_bytes``: a file that grew past it while being read
    is refused too), with ``open_input``'s errors."""
    with open_input(path, error, kind, max_bytes=max_bytes) as fh:
        try:
            data = fh.read(max_bytes + 1)
        except OSError as exc:
            raise error(path, f"cannot read: {exc.strerror or type(exc).__name__}") from None
    if len(data) > max_bytes:
        raise _size_error(path, error, kind, max_bytes)
    return data


def check_input(path: str | Path, error: type[InputError], kind: str) -> bool:
    """For a path that may not exist yet: False if it does not exist; True if it is a
    regular file; ``error`` if it exists and is anything else (without opening it)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    except NotADirectoryError:
        raise error(path, "cannot create its directory (a parent is a file)") from None
    except PermissionError:
        raise error(path, "permission denied") from None
    except OSError as exc:
        raise error(path, f"cannot check: {exc.strerror or type(exc).__name__}") from None
    if not stat.S_ISREG(st.st_mode):
        raise _refuse(path, error, kind, st.st_mode)
    return True
