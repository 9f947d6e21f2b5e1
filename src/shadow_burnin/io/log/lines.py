"""The one way a log is read line by line: opened as an input, each complete line decoded
as a JSON object, every line bounded.

Every line reader of the package (``logread`` for reports, ``store`` for the state,
``legacy``) goes through :func:`iter_lines`; ``logscan`` reads blocks of whole lines for
``bench``'s hot path and decodes a bad block again with :func:`decode_line`. A line
longer than ``MAX_LINE`` (64 MiB: a round holds two replies of at most 4 MiB each by
default) is refused with the file and line named, so no input grows memory without
bound; an unterminated last line (a run writing it, or a crash) is not a record yet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from shadow_burnin.errors import LogError
from shadow_burnin.inputs import open_input

MAX_LINE = 64 << 20


def open_log(path: Path) -> BinaryIO:
    """Open a log for reading; a missing, directory or unreadable path is a LogError."""
    return open_input(path, LogError, "log")


def decode_line(line: bytes, fail: Callable[[str], LogError]) -> dict[str, Any]:
    """One log line as a JSON object; ``fail(reason)`` makes the error to raise."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise fail("line is not JSON") from None
    if not isinstance(record, dict):
        raise fail("line is not a JSON object")
    return record


def iter_raw(path: Path, start: int = 0) -> Iterator[tuple[int, bytes]]:
    """``(line_number, line)`` for each complete, non-blank line from byte ``start``
    (numbers count from 1 at ``start``); stops before an unterminated last line."""
    with open_log(path) as fh:
        fh.seek(start)
        number = 0
        while True:
            line = fh.readline(MAX_LINE + 1)
            if not line:
                return
            number += 1
            if not line.endswith(b"\n"):
                if len(line) > MAX_LINE:
                    raise LogError(path, f"line is over {MAX_LINE >> 20} MiB", line=number)
                return  # torn: not a record yet
            if line.strip():
                yield number, line


def iter_lines(path: Path, start: int = 0) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line_number, record)`` for each complete line from byte ``start``; a line that
    is not a JSON object raises LogError naming the file and line."""
    for number, line in iter_raw(path, start):
        yield number, decode_line(line, partial(LogError, path, line=number))
