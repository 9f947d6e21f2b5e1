"""The log (JSONL, source of truth) and the state (a resumable cache of it).

Every batch of rounds (one round, or the rounds that finished together: group commit) is
one ``write(2)`` of JSON lines to a file opened with ``O_APPEND`` and one fsync, then the
state file is replaced atomically (temp file, fsync, rename). ``append_many`` may run in
a worker thread (the runner keeps its event loop free meanwhile): a lock serialises
writers, and ``Store.state`` is swapped for the new state only once it is saved, so a
reader never sees a half-applied batch. On open the two
are reconciled: a torn last line is moved to ``<log>.torn``; a state behind the log
(crash between the append and the state write) is caught up from the log; a state ahead
of the log or missing is rebuilt from the log. A lock file keeps a second writer out.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from shadow_burnin.core.records import BUCKETS, SCHEMA
from shadow_burnin.errors import LockedError, LogError, StateError, StorageError
from shadow_burnin.inputs import STATE_MAX_BYTES, check_input, open_input, read_input

STATE_SCHEMA = 1


@dataclass(slots=True)
class State:
    """What a restart needs, derived entirely from the log."""

    setup: str | None = None
    last_round: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(BUCKETS, 0))
    cursor: int = 0
    seed: int | None = None
    started_at: str | None = None
    last_ts: str | None = None
    log_size: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def apply(self, record: dict[str, Any]) -> None:
        """Fold one log record (a round; a halt/ack event) into the state."""
        if record.get("kind", "round") != "round":
            if record.get("kind") == "event":
                _apply_halt_event(self.extra, record)
            return
        self.last_round = max(self.last_round, int(record["round"]))
        bucket = record.get("bucket")
        if bucket in self.counts:
            self.counts[bucket] += 1
        if self.started_at is None:
            self.started_at = record.get("ts")
        self.last_ts = record.get("ts", self.last_ts)
        if record.get("source") != "legacy":
            if record.get("cursor") is not None:
                self.cursor = int(record["cursor"]) + 1
            if record.get("seed") is not None:
                self.seed = int(record["seed"])
            if record.get("setup") is not None:
                self.setup = str(record["setup"])

    def copy(self) -> State:
        """An independent copy (``apply`` on it leaves this one alone)."""
        return State(self.setup, self.last_round, dict(self.counts), self.cursor, self.seed,
                     self.started_at, self.last_ts, self.log_size, dict(self.extra))

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": STATE_SCHEMA,
            "setup": self.setup,
            "last_round": self.last_round,
            "counts": self.counts,
            "cursor": self.cursor,
            "seed": self.seed,
            "started_at": self.started_at,
            "last_ts": self.last_ts,
            "log_size": self.log_size,
            **self.extra,
        }

    @classmethod
    def from_json(cls, path: Path, obj: Any) -> State:
        if not isinstance(obj, dict) or obj.get("schema") != STATE_SCHEMA:
            raise StateError(path, "not a shadow-burnin state file (no schema 1)")
        try:
            counts = {b: int(obj["counts"].get(b, 0)) for b in BUCKETS}
            known = {"schema", "setup", "last_round", "counts", "cursor", "seed",
                     "started_at", "last_ts", "log_size"}
            return cls(
                setup=obj.get("setup"),
                last_round=int(obj["last_round"]),
                counts=counts,
                cursor=int(obj.get("cursor", 0)),
                seed=None if obj.get("seed") is None else int(obj["seed"]),
                started_at=obj.get("started_at"),
                last_ts=obj.get("last_ts"),
                log_size=int(obj.get("log_size", 0)),
                extra={k: v for k, v in obj.items() if k not in known},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StateError(path, f"corrupt state file ({type(exc).__name__}: {exc})") from None


def _apply_halt_event(extra: dict[str, Any], event: dict[str, Any]) -> None:
    """Mirror the active no-match halt in ``extra["halt"]`` (the log stays the truth)."""
    name = event.get("event")
    if name == "halt":
        extra["halt"] = {"active": True, "event": event}
    elif name == "ack-halt":
        extra["halt"] = {"active": False, "event": extra.get("halt", {}).get("event"),
                         "ack": event}


def open_log(path: Path) -> BinaryIO:
    """Open a log for reading; a missing, directory or unreadable path is a LogError."""
    return open_input(path, LogError, "log")


def iter_log(path: Path, start: int = 0) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, record)`` for each line from byte offset ``start``.

    Line numbers count from 1 at ``start``. A line that is not a JSON object raises
    LogError naming the file and line.
    """
    fh = open_log(path)
    with fh:
        fh.seek(start)
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                raise LogError(path, "line is not JSON", line=number) from None
            if not isinstance(record, dict):
                raise LogError(path, "line is not a JSON object", line=number)
            yield number, record


def check_round_record(path: Path, number: int, record: dict[str, Any]) -> None:
    """Refuse a record that is not one of ours (e.g. a legacy or foreign log)."""
    kind = record.get("kind", "round")
    if kind == "round" and (record.get("schema") != SCHEMA or "round" not in record):
        raise LogError(path, "not a shadow-burnin log record (no schema/round)", line=number)


def rebuild_state(log: Path) -> State:
    """Derive the state from the whole log (the log is the source of truth)."""
    state = State()
    if log.exists():
        for number, record in iter_log(log):
            check_round_record(log, number, record)
            state.apply(record)
        state.log_size = log.stat().st_size
    return state


@dataclass
class Recovery:
    """What ``open_store`` had to repair; messages are shown as warnings."""

    warnings: list[str] = field(default_factory=list)


class Store:
    """Append-only log + atomically replaced state, under an exclusive lock."""

    def __init__(self, log: Path, state_path: Path) -> None:
        self.log = log
        self.state_path = state_path
        self.state = State()
        self._tmp = state_path.with_name(state_path.name + ".tmp")
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._writing = threading.Lock()  # one writer at a time (loop or worker thread)

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
        recovery = Recovery()
        self._repair_torn_tail(recovery)
        self.state = self._reconcile(recovery)
        try:
            self._fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except PermissionError:
            raise LogError(self.log, "permission denied (cannot append)") from None
        return recovery

    def _lock(self) -> None:
        lock_path = self.log.with_name(self.log.name + ".lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except PermissionError:
            raise LogError(lock_path, "permission denied (cannot create lock file)") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockedError(
                f"{self.log}: another shadow-burnin run is using this log (lock {lock_path})"
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
                torn_path = self.log.with_name(self.log.name + ".torn")
                with open(torn_path, "ab") as out:
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
            f"{self.log}: torn last line ({len(torn)} bytes) moved to {torn_path}"
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

    def _reconcile(self, recovery: Recovery) -> State:
        state = self._read_state()
        log_size = self.log.stat().st_size if self.log.exists() else 0
        if state is None:
            if log_size:
                recovery.warnings.append(f"{self.state_path}: missing; rebuilt from the log")
            return rebuild_state(self.log)
        if state.log_size == log_size:
            return state
        if state.log_size < log_size and _starts_line(self.log, state.log_size):
            caught = 0
            for number, record in iter_log(self.log, state.log_size):
                check_round_record(self.log, number, record)
                state.apply(record)
                caught += 1
            state.log_size = log_size
            recovery.warnings.append(
                f"{self.state_path}: behind the log by {caught} record(s); caught up from the log"
            )
            return state
        recovery.warnings.append(
            f"{self.state_path}: does not match the log; rebuilt from the log"
        )
        rebuilt = rebuild_state(self.log)
        derived = rebuilt.extra.get("halt")  # derived from the log's events: it wins
        rebuilt.extra = {k: v for k, v in state.extra.items() if k != "halt"}
        if derived is not None:
            rebuilt.extra["halt"] = derived
        return rebuilt

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
        return State.from_json(self.state_path, obj)

    # -- writing ------------------------------------------------------------------
    def append(self, record: dict[str, Any]) -> None:
        """Append one record to the log, fold it into the state, save the state."""
        self.append_many([record])

    def append_many(self, records: list[dict[str, Any]]) -> None:
        """Append records in one write and one fsync, then save the state once.

        On a write error the log is cut back to its last complete record and
        StorageError is raised; the state still describes that record. Thread-safe:
        callers are serialised, and ``self.state`` is replaced by the new state after
        it was saved (or, if only the state write failed, after the log append).
        """
        if self._fd is None:
            raise RuntimeError("store not open")
        dumps = orjson.dumps
        data = b"".join([dumps(r, option=orjson.OPT_APPEND_NEWLINE) for r in records])
        with self._writing:
            state = self.state.copy()
            before = state.log_size
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
            for record in records:
                state.apply(record)
            state.log_size = before + len(data)
            try:
                self._write_state(state)
            finally:
                self.state = state  # the log holds these records, whatever the state file

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
