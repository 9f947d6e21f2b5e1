"""The log (JSONL, source of truth for rounds), its events file (source of truth for
events) and the state (a resumable cache of both).

The log holds exactly one line per round (``wc -l`` counts rounds). Every batch of rounds
(one round, or the rounds that finished together: group commit) is one ``write(2)`` of
JSON lines to a file opened with ``O_APPEND`` and one fsync, then the state file is
replaced atomically (temp file, fsync, rename). Events (halt, ack, alert outcomes …) go
to ``<log>.events.jsonl`` with the same discipline (``io.log.events``); the state folds
them in and remembers how many bytes of that file it has seen (``events_size``), so
events appended by another process (``ack-halt`` while a run holds the log) are picked
up by reading only the new bytes (:meth:`Store.poll_events`).

``append_many`` may run in a worker thread (the runner keeps its event loop free
meanwhile): a lock serialises writers, and ``Store.state`` is swapped for the new state
only once it is saved, so a reader never sees a half-applied batch. On open the files
are reconciled: a torn last line is moved to ``<log>.torn``; a state behind the log
(crash between the append and the state write) is caught up from the log; a state ahead
of the log or missing is rebuilt from the log and the events file; a state that belongs
to another log (its ``log_head``, a digest of the log's first line, or its first round's
time differs) is refused, never replaced. A lock file keeps a second writer out.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import msgspec
import orjson

from shadow_burnin.core.records import SCHEMA, RecordKind, loggable, record_kind
from shadow_burnin.core.state import STATE_SCHEMA, State, head_digest
from shadow_burnin.errors import LockedError, LogError, StateError, StorageError
from shadow_burnin.inputs import STATE_MAX_BYTES, check_input, read_input
from shadow_burnin.io.log.events import append_events, events_size, read_event_lines
from shadow_burnin.io.log.lines import iter_lines, open_log
from shadow_burnin.io.log.logset import closed_segments
from shadow_burnin.io.log.rotation import Rotation, close_segment, day_of, finish_rotation
from shadow_burnin.io.log.sidecars import events_path, lock_path, torn_path

SEGMENTS = "segments"  # state key: how many closed segments the state has folded

__all__ = ["STATE_SCHEMA", "Recovery", "State", "Store", "iter_log", "open_log",
           "rebuild_state"]


def state_from_json(path: Path, obj: Any) -> State:
    try:
        return State.from_json(obj)
    except ValueError as exc:
        raise StateError(path, str(exc)) from None


iter_log = iter_lines  # the one line reader (``io.log.lines``)


def check_round_record(path: Path, number: int, record: dict[str, Any]) -> None:
    """Refuse a record that is not one of ours (e.g. a legacy or foreign log)."""
    if record_kind(record) is RecordKind.ROUND and (
            record.get("schema") != SCHEMA or "round" not in record):
        raise LogError(path, "not a shadow-burnin log record (no schema/round)", line=number)


def first_line(path: Path) -> bytes:
    """The log's first line (at most 1 MiB of it); b"" for a missing or empty log."""
    try:
        with open(path, "rb") as fh:
            return fh.readline(1 << 20)
    except FileNotFoundError:
        return b""


def rebuild_state(log: Path) -> State:
    """Derive the state from the whole log (every rotated segment, then the live log)
    and its events file (the sources of truth)."""
    state = State()
    closed = closed_segments(log)
    for segment in closed:
        _fold_segment(state, segment, 0)
    if closed:
        state.extra[SEGMENTS] = len(closed)
    if log.exists():
        for number, record in iter_log(log):
            check_round_record(log, number, record)
            state.apply(record)
        state.log_size = log.stat().st_size
        head = first_line(log)
        state.log_head = head_digest(head) if head.endswith(b"\n") else None
    _fold_events(log, state, 0)
    return state


def _fold_segment(state: State, segment: Path, start: int) -> int:
    """Fold a closed segment's rounds from byte ``start`` into ``state``; how many."""
    n = 0
    for number, record in iter_log(segment, start):
        check_round_record(segment, number, record)
        state.apply(record)
        n += 1
    return n


def _fold_events(log: Path, state: State, start: int) -> list[dict[str, Any]]:
    """Fold the events file from byte ``start`` into ``state``; the events read."""
    out: list[dict[str, Any]] = []
    while True:
        events, end = read_event_lines(log, start)
        for event in events:
            state.apply_event(event)
        out.extend(events)
        state.events_size = end
        if end == start or not events:
            return out
        start = end


class Recovery(msgspec.Struct):
    """What ``open_store`` had to repair; messages are shown as warnings."""

    warnings: list[str] = msgspec.field(default_factory=list)


class Store:
    """Append-only log + atomically replaced state, under an exclusive lock."""

    def __init__(self, log: Path, state_path: Path, rotate: Rotation | None = None) -> None:
        self.log = log
        self.state_path = state_path
        self.rotate = rotate  # close the live segment when due (between batches)
        self._live_day: str | None = None  # UTC day of the live segment's first round
        self.state = State()
        self._tmp = state_path.with_name(state_path.name + ".tmp")
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._writing = threading.Lock()  # one writer at a time (loop or worker thread)
        self._index: Any = None  # io.log.index.Appender, opened with the store

    # -- opening ------------------------------------------------------------------
    def open(self) -> Recovery:
        """Lock, repair and reconcile; afterwards ``self.state`` matches the log."""
        # validated before any side file (lock, directory) is created next to them
        check_input(self.log, LogError, "log")
        check_input(self.state_path, StateError, "state")
        for p, error in ((self.log, LogError), (self.state_path, StateError)):
            try:
                p.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:  # e.g. a parent is a file: one line, not a traceback
                why = "a parent is a file" if isinstance(
                    exc, FileExistsError | NotADirectoryError) else _why(exc)
                raise error(p, f"cannot create its directory ({why})") from None
        self._lock()
        try:
            recovery = Recovery()
            self._finish_rotation(recovery)
            self._repair_torn_tail(recovery)
            self.state = self._reconcile(recovery)
            self._live_day = _first_day(self.log)
            try:
                self._fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            except PermissionError:
                raise LogError(self.log, "permission denied (cannot append)") from None
            self._open_index()
        except BaseException:
            self.close()  # a refused open leaves no lock behind
            raise
        return recovery

    def _lock(self) -> None:
        lock = lock_path(self.log)
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except PermissionError:
            raise LogError(lock, "permission denied (cannot create lock file)") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockedError(
                f"{self.log}: another shadow-burnin run is using this log (lock {lock})"
            ) from None
        self._lock_fd = fd

    def _repair_torn_tail(self, recovery: Recovery) -> None:
        if not self.log.exists():
            return
        try:
            size = self.log.stat().st_size
            with open(self.log, "rb+") as fh:
                if size == 0:
                    return
                tail_start = max(0, size - (1 << 20))
                fh.seek(tail_start)
                tail = fh.read()
                cut = tail.rfind(b"\n")
                torn = tail[cut + 1:] if cut >= 0 else tail
                if not torn:
                    return
                if cut < 0 and tail_start > 0:
                    raise LogError(self.log, "last line is over 1 MiB and unterminated")
                self._refuse_foreign(fh)  # never cut a file that is not ours
                torn_to = torn_path(self.log)
                with open(torn_to, "ab") as out:
                    out.write(torn + b"\n")
                    out.flush()
                    os.fsync(out.fileno())
                fh.truncate(size - len(torn))
                fh.flush()
                os.fsync(fh.fileno())
        except PermissionError:
            raise LogError(self.log, "permission denied") from None
        except OSError as exc:  # e.g. ENOSPC writing <log>.torn: one line, not a traceback
            raise StorageError(f"{self.log}: cannot move the torn last line aside "
                               f"({_why(exc)})") from None
        recovery.warnings.append(
            f"{self.log}: torn last line ({len(torn)} bytes) moved to {torn_to}"
        )

    def _refuse_foreign(self, fh: BinaryIO) -> None:
        """LogError unless line 1 is one of our records (or, unterminated, starts like one)."""
        fh.seek(0)
        first = fh.readline(1 << 20)
        try:
            record = orjson.loads(first)
        except orjson.JSONDecodeError:
            if first.endswith(b"\n") or not any(first[:len(p)] == p[:len(first)]
                                                for p in (b'{"schema":', b'{"kind":')):
                raise LogError(self.log, "line is not JSON (not a shadow-burnin log)",
                               line=1) from None
            return
        if not isinstance(record, dict):
            raise LogError(self.log, "line is not a JSON object", line=1)
        check_round_record(self.log, 1, record)

    def _finish_rotation(self, recovery: Recovery) -> None:
        """A rotation cut short (the live log is still the last segment): finish it."""
        closed = closed_segments(self.log)
        try:
            cut = bool(closed) and os.path.samefile(closed[-1], self.log)
        except OSError:
            cut = False
        if cut:
            try:
                finish_rotation(self.log, closed[-1])
            except OSError as exc:
                raise StorageError(f"{self.log}: cannot finish the rotation to "
                                   f"{closed[-1].name} ({_why(exc)})") from None
            recovery.warnings.append(f"{self.log}: an interrupted rotation to "
                                     f"{closed[-1].name} was finished")

    def _catch_up_segments(self, state: State, recovery: Recovery) -> State | None:
        """The state saved before the last rotation(s): fold the rest of the segment it
        knew as the live log, and any later segment; None when the segments do not
        match what the state knew (the caller rebuilds)."""
        closed = closed_segments(self.log)
        known = int(state.extra.get(SEGMENTS, 0) or 0)
        if len(closed) == known:
            return state
        if len(closed) < known or (not state.last_round and state.log_head is None):
            return None
        first = closed[known]
        head = first_line(first)
        if state.log_head is not None and not (
                head.endswith(b"\n") and head_digest(head) == state.log_head):
            return None
        if first.stat().st_size < state.log_size or not _starts_line(first, state.log_size):
            return None
        caught = _fold_segment(state, first, state.log_size)
        for segment in closed[known + 1:]:
            caught += _fold_segment(state, segment, 0)
        state.extra[SEGMENTS] = len(closed)
        state.log_size, state.log_head = 0, None
        recovery.warnings.append(f"{self.state_path}: saved before the log was rotated; "
                                 f"caught up {caught} round(s) from its segments")
        return state

    def _reconcile(self, recovery: Recovery) -> State:
        state = self._read_state()
        log_size = self.log.stat().st_size if self.log.exists() else 0
        if state is None:
            if log_size or closed_segments(self.log):
                recovery.warnings.append(f"{self.state_path}: missing; rebuilt from the log")
            return rebuild_state(self.log)
        caught_up = self._catch_up_segments(state, recovery)
        if caught_up is None:
            recovery.warnings.append(f"{self.state_path}: does not match the log's rotated "
                                     "segments; rebuilt from the log")
            rebuilt = rebuild_state(self.log)
            rebuilt.extra.update({k: v for k, v in state.extra.items()
                                  if k not in ("halt", SEGMENTS)})
            return rebuilt
        state = caught_up
        self._check_belongs(state, log_size)
        if state.log_size == log_size:
            pass
        elif state.log_size < log_size and _starts_line(self.log, state.log_size):
            caught = 0
            for number, record in iter_log(self.log, state.log_size):
                check_round_record(self.log, number, record)
                state.apply(record)
                caught += 1
            state.log_size = log_size
            recovery.warnings.append(
                f"{self.state_path}: behind the log by {caught} record(s); caught up from the log"
            )
        else:
            recovery.warnings.append(
                f"{self.state_path}: does not match the log; rebuilt from the log"
            )
            rebuilt = rebuild_state(self.log)
            derived = rebuilt.extra.get("halt")  # from the events: it wins
            rebuilt.extra = {k: v for k, v in state.extra.items() if k != "halt"}
            if SEGMENTS in rebuilt.extra or closed_segments(self.log):
                rebuilt.extra[SEGMENTS] = len(closed_segments(self.log))
            if derived is not None:
                rebuilt.extra["halt"] = derived
            return rebuilt
        if state.log_head is None and log_size:
            head = first_line(self.log)
            state.log_head = head_digest(head) if head.endswith(b"\n") else None
        events = events_size(self.log)
        if events < state.events_size:  # the events file was replaced: fold it again
            recovery.warnings.append(f"{events_path(self.log)}: shorter than the state "
                                     "knew; the halt status was rebuilt from it")
            fresh = rebuild_state(self.log)
            state.extra.pop("halt", None)
            if "halt" in fresh.extra:
                state.extra["halt"] = fresh.extra["halt"]
            state.events_size = fresh.events_size
        else:
            _fold_events(self.log, state, state.events_size)
        return state

    def _check_belongs(self, state: State, log_size: int) -> None:
        """Refuse a state file written for another log (it is never replaced)."""
        if not state.last_round and state.log_head is None:
            return  # nothing in it to lose
        if state.extra.get(SEGMENTS) and state.log_head is None and state.log_size == 0:
            return  # saved with a fresh live segment: its rounds are caught up from 0
        head = first_line(self.log)
        if state.log_head is not None:
            same = head.endswith(b"\n") and head_digest(head) == state.log_head
        else:  # a state written before log_head: compare the first round's time
            try:
                first = orjson.loads(head) if head.endswith(b"\n") else None
            except orjson.JSONDecodeError:
                first = None
            same = isinstance(first, dict) and (
                state.started_at is None or first.get("ts") == state.started_at)
        if not same:
            what = "is empty" if not log_size else "starts with a different round"
            raise StateError(
                self.state_path,
                f"belongs to another log ({state.last_round} rounds from "
                f"{state.started_at or '?'}; {self.log} {what}): pass that log's --state, "
                "or move this file away to rebuild the state from the log")

    def _read_state(self) -> State | None:
        if not check_input(self.state_path, StateError, "state"):
            return None
        raw = read_input(self.state_path, StateError, "state", max_bytes=STATE_MAX_BYTES)
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise StateError(
                self.state_path,
                "corrupt state file (not JSON); move it away to rebuild it from the log",
            ) from None
        return state_from_json(self.state_path, obj)

    # -- writing ------------------------------------------------------------------
    def append(self, record: dict[str, Any]) -> None:
        """Append one round to the log, fold it into the state, save the state."""
        self.append_many([record])

    def append_many(self, records: list[dict[str, Any]]) -> None:
        """Append rounds in one write and one fsync, then save the state once.

        Only rounds go to the log (one line each): an event goes through
        :meth:`append_events`, an A/A pair inside its round (ValueError otherwise).

        On a write error the log is cut back to its last complete record and
        StorageError is raised; the state still describes that record. Thread-safe:
        callers are serialised, and ``self.state`` is replaced by the new state after
        it was saved (or, if only the state write failed, after the log append).
        """
        if self._fd is None:
            raise RuntimeError("store not open")
        for r in records:
            if record_kind(r) is not RecordKind.ROUND:
                raise ValueError(f"only rounds go to the log, not {r.get('kind')!r} records")
        data = b"".join([_line(r) for r in records])
        with self._writing:
            state = self.state.copy()
            if data and self.rotate is not None:
                state = self._maybe_rotate(state, records, len(data))
            before = state.log_size
            if before == 0 and records:
                self._live_day = day_of(records[0].get("ts"))
            if before == 0 and data:
                state.log_head = head_digest(data[:data.index(b"\n")])
            try:
                written = os.write(self._fd, data)
                while written < len(data):
                    written += os.write(self._fd, data[written:])
                os.fsync(self._fd)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, before)
                raise StorageError(f"{self.log}: cannot append round ({_why(exc)}); "
                                   "log and state left at the last complete round") from None
            self._append_index(records, data, before)
            for record in records:
                state.apply(record)
            state.log_size = before + len(data)
            try:
                self._write_state(state)
            finally:
                self.state = state  # the log holds these records, whatever the state file

    def _maybe_rotate(self, state: State, records: list[dict[str, Any]], size: int
                      ) -> State:
        """Close the live segment before this batch when the rotation rule says so
        (``io.log.rotation``); the state saved at once knows the new segment."""
        assert self.rotate is not None and self._fd is not None
        if not self.rotate.due(state.log_size, self._live_day, size,
                               day_of(records[0].get("ts"))):
            return state
        number = int(state.extra.get(SEGMENTS, 0) or 0) + 1
        self._flush_index()  # the closing segment's index covers all of it
        try:
            close_segment(self.log, number)
            fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StorageError(f"{self.log}: cannot rotate to segment {number} "
                               f"({_why(exc)}); log and state left at the last complete "
                               "round") from None
        os.close(self._fd)
        self._fd = fd
        if self._index is not None:  # the closed segment took its index along
            self._open_index()
        state.extra[SEGMENTS] = number
        state.log_size, state.log_head = 0, None
        self._live_day = None
        try:
            self._write_state(state)
        finally:
            self.state = state
        return state.copy()

    def _open_index(self) -> None:
        """The round index's writer (``io.log.index``), caught up with the log."""
        from shadow_burnin.io.log.index import open_appender

        self._index = open_appender(self.log)

    def _append_index(self, records: list[dict[str, Any]], data: bytes, start: int) -> None:
        """The committed rounds into the round index (after the log's fsync; batched: a
        segment every ``index.BATCH_ROUNDS`` rounds or ``BATCH_SECONDS``; a cache: a
        failure here never fails the commit, readers fold the log instead)."""
        if self._index is not None:
            self._index.append(records, data, start)

    def _flush_index(self) -> None:
        """The rounds the index has not appended yet, appended now (close, rotation)."""
        if self._index is not None:
            self._index.flush()

    def flush_index(self) -> None:
        """:meth:`_flush_index` for a caller outside a commit (serialised with them)."""
        with self._writing:
            self._flush_index()

    def append_events(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Append events to ``<log>.events.jsonl`` (one write, fsync), after folding in
        any events another process appended meanwhile; save the state. Returns those
        other events (e.g. an ``ack-halt`` written by the ``ack-halt`` command)."""
        if self._fd is None:
            raise RuntimeError("store not open")
        with self._writing:
            state = self.state.copy()
            news = _fold_events(self.log, state, state.events_size)
            if events:
                append_events(self.log, events)
                news_after = _fold_events(self.log, state, state.events_size)
                # ours, and any another process slipped in between
                news.extend(e for e in news_after if not any(e is x for x in events)
                            and e not in events)
            try:
                self._write_state(state)
            finally:
                self.state = state
        return news

    def poll_events(self) -> list[dict[str, Any]]:
        """Events appended to ``<log>.events.jsonl`` by another process since the last
        look (only the new bytes are read); folded into the state (saved only if any)."""
        if events_size(self.log) == self.state.events_size:
            return []
        return self.append_events([])

    def save_state(self) -> None:
        """Replace the state file atomically: temp file, fsync, rename.

        The directory is not fsynced: if a power cut loses the rename, the previous
        state is still there and is caught up from the log on the next start.
        """
        with self._writing:
            self._write_state(self.state)

    def _write_state(self, state: State) -> None:
        tmp = self._tmp
        data = orjson.dumps(state.to_json(), option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                view = memoryview(data)
                while view:  # a short write (disk nearly full) must not leave half a file
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.state_path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise StorageError(f"{self.state_path}: cannot write state ({_why(exc)}); "
                               "the log is intact and the state will be rebuilt") from None

    def close(self) -> None:
        if self._fd is not None:
            self.flush_index()  # after a clean run the index covers the whole log
            os.close(self._fd)
            self._fd = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Store:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _line(record: dict[str, Any]) -> bytes:
    """One log line; a record holding a lone surrogate is made loggable first."""
    try:
        return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)
    except orjson.JSONEncodeError:
        return orjson.dumps(loggable(record), option=orjson.OPT_APPEND_NEWLINE)


def _first_day(log: Path) -> str | None:
    """The UTC day of the live log's first round (None: empty or unreadable)."""
    head = first_line(log)
    try:
        record = orjson.loads(head) if head.endswith(b"\n") else None
    except orjson.JSONDecodeError:
        return None
    return day_of(record.get("ts")) if isinstance(record, dict) else None


def _starts_line(path: Path, offset: int) -> bool:
    if offset == 0:
        return True
    with open(path, "rb") as fh:
        fh.seek(offset - 1)
        return fh.read(1) == b"\n"


def _why(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "disk full"
    return exc.strerror or type(exc).__name__


def archive(paths: list[Path], stamp: str, on_move: Callable[[Path, Path], None]) -> None:
    """Move existing files aside as ``name.<stamp>`` (for ``--new-run``)."""
    for p in paths:
        if p.exists():
            target = p.with_name(f"{p.name}.{stamp}")
            os.replace(p, target)
            on_move(p, target)
