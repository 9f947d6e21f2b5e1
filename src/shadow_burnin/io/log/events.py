"""``<log>.events.jsonl``: the append-only, crash-safe log of events (halt, ack, cutover,
rollback, …), one JSON object per line.

Events cannot be rebuilt from rounds, so they get the log's own discipline: each append is
one ``write`` of whole lines followed by ``fsync``; a torn last line left by a crash is
moved to ``<log>.events.jsonl.torn`` before the next append, and readers skip it.
Logs written before this file existed carried their events inline (``"kind": "event"``
lines); :func:`read_events` returns those too, so every reader accepts both layouts.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from shadow_burnin.errors import LogError, StorageError
from shadow_burnin.io.log.sidecars import EVENTS_TORN, events_path

_lock = threading.Lock()
MAX_EVENT_LINE = 16 << 20  # an event is small; a longer line is not one of ours


def _dumps(record: dict[str, Any]) -> bytes:
    return orjson.dumps(record) + b"\n"


def _repair_tail(path: Path) -> None:
    try:
        with open(path, "r+b") as fh:
            size = fh.seek(0, os.SEEK_END)
            if size == 0:
                return
            fh.seek(max(0, size - 1))
            if fh.read(1) == b"\n":
                return
            # find the last newline
            pos, block = size, 65536
            cut = -1
            while pos > 0 and cut < 0:
                start = max(0, pos - block)
                fh.seek(start)
                chunk = fh.read(pos - start)
                i = chunk.rfind(b"\n")
                if i >= 0:
                    cut = start + i + 1
                pos = start
            cut = max(cut, 0)
            fh.seek(cut)
            torn = fh.read()
            with open(path.with_name(path.name[: -len(".events.jsonl")] + EVENTS_TORN),
                      "ab") as out:
                out.write(torn + b"\n")
                out.flush()
                os.fsync(out.fileno())
            fh.truncate(cut)
            fh.flush()
            os.fsync(fh.fileno())
    except FileNotFoundError:
        return


def append_event(log: Path, record: dict[str, Any]) -> None:
    """Append one event (``record`` gets ``"kind": "event"`` if it has no kind) and fsync."""
    rec = {"kind": "event", **record} if "kind" not in record else record
    append_events(log, [rec])


def append_events(log: Path, records: list[dict[str, Any]]) -> None:
    if not records:
        return
    path = events_path(log)
    data = b"".join(_dumps({"kind": "event", **r} if "kind" not in r else r) for r in records)
    with _lock:
        try:
            _repair_tail(path)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                view = memoryview(data)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise StorageError(f"{path}: cannot append the event: {exc.strerror}") from None


def iter_event_file(log: Path) -> Iterator[dict[str, Any]]:
    """Events from ``<log>.events.jsonl`` in order; a torn last line is skipped."""
    path = events_path(log)
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except FileNotFoundError:
        return
    except OSError as exc:
        raise LogError(path, f"cannot read: {exc.strerror}") from None
    with fh:
        n = 0
        while line := fh.readline(MAX_EVENT_LINE + 1):
            n += 1
            if not line.endswith(b"\n"):
                if len(line) > MAX_EVENT_LINE:
                    raise LogError(path, f"line is over {MAX_EVENT_LINE >> 20} MiB", line=n)
                return  # torn tail: written by a crash, moved aside on the next append
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                raise LogError(path, "not a JSON object", line=n) from None
            if not isinstance(obj, dict):
                raise LogError(path, "not a JSON object", line=n)
            yield obj


def read_event_lines(log: Path, start: int = 0, limit: int = 64 << 20
                     ) -> tuple[list[dict[str, Any]], int]:
    """The events whose lines start at byte ``start`` or later, and the offset just past
    the last complete line read (a torn tail is left for later). Reads at most ``limit``
    bytes: a caller that gets fewer events than there are calls again from the offset.
    Used to tail the file: only the new bytes are read."""
    path = events_path(log)
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except FileNotFoundError:
        return [], start
    except OSError as exc:
        raise LogError(path, f"cannot read: {exc.strerror}") from None
    with fh:
        fh.seek(start)
        data = fh.read(limit)
    cut = data.rfind(b"\n") + 1
    out: list[dict[str, Any]] = []
    for line in data[:cut].split(b"\n")[:-1]:
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise LogError(path, "not a JSON object (at byte "
                           f"{start + data.index(line)})") from None
        if not isinstance(obj, dict):
            raise LogError(path, "not a JSON object")
        out.append(obj)
    return out, start + cut


def events_size(log: Path) -> int:
    """The size of ``<log>.events.jsonl`` (0 if there is none)."""
    try:
        return os.stat(events_path(log)).st_size
    except FileNotFoundError:
        return 0


def read_events(log: Path, inline: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """All events of a log: those written inline by older versions (``inline``, as the
    log reader collected them) followed by ``<log>.events.jsonl``, in time order."""
    out = list(inline or [])
    out.extend(iter_event_file(log))
    out.sort(key=lambda e: str(e.get("ts", "")))
    return out
