"""The ``ppl`` JSONL beside the log: one perplexity run per line, the gates read the last.

Kept apart from the measuring (``pplrun``) so that reading it needs no HTTP client.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

from shadow_burnin.errors import LogError, StorageError
from shadow_burnin.inputs import check_input, read_input

PPL_RUNS_MAX_BYTES = 256 * 1024 * 1024


def append_run(path: Path, record: dict[str, Any]) -> None:
    """Append one run to the ``ppl`` JSONL (one write, fsynced)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, orjson.dumps(record) + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise StorageError(f"{path}: cannot append the ppl run ({exc.strerror})") from None


def latest_run(path: Path) -> dict[str, Any] | None:
    """The last complete run in the ``ppl`` JSONL (None: no file or no run)."""
    if not check_input(path, LogError, "ppl runs"):
        return None
    raw = read_input(path, LogError, "ppl runs", max_bytes=PPL_RUNS_MAX_BYTES)
    lines = raw.split(b"\n")
    for number in range(len(lines) - 2, -1, -1):  # the last element follows the last \n
        line = lines[number].strip()
        if not line:
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise LogError(path, "line is not JSON", line=number + 1) from None
        if isinstance(record, dict) and record.get("kind") == "ppl":
            return record
        raise LogError(path, "not a shadow-burnin ppl record", line=number + 1)
    return None
