"""The log's family of files, listed once, and the one rule for writing any output file.

A burn-in log ``x.jsonl`` has side files: the state (``x.state`` by default, configurable),
the lock, the torn-line quarantine, the events log, the round index, perplexity runs and
the Caddy snapshots a cutover saves. Every command that writes a file asks
:func:`guard_output` first, so no flag can point a writer at the evidence.

Output files this tool writes carry a marker (a first-line comment in the medium's own
syntax, see :func:`marker_line`); an existing file is overwritten only when it carries the
marker of the same kind. Writes go to a temporary file in the same directory, fsynced,
then renamed over the target: the old file stays whole until the new one is.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

import msgspec

from shadow_burnin.errors import ConfigError, StorageError

# Suffixes appended to the log's full name (``x.jsonl`` → ``x.jsonl.lock``).
LOCK = ".lock"
TORN = ".torn"
EVENTS = ".events.jsonl"
EVENTS_TORN = ".events.jsonl.torn"
INDEX = ".idx"
CADDY_BEFORE = ".caddy-before-"
_LOG_SUFFIXES = (LOCK, TORN, EVENTS, EVENTS_TORN, INDEX)

MARKER_PREFIX = "shadow-burnin:"


def _stem(log: Path) -> str:
    return log.name[: -len(".jsonl")] if log.name.endswith(".jsonl") else log.name


def lock_path(log: Path) -> Path:
    return log.with_name(log.name + LOCK)


def torn_path(log: Path) -> Path:
    return log.with_name(log.name + TORN)


def events_path(log: Path) -> Path:
    """``x.jsonl`` → ``x.jsonl.events.jsonl``: the append-only event log beside the log."""
    return log.with_name(log.name + EVENTS)


def index_path(log: Path) -> Path:
    return log.with_name(log.name + INDEX)


def default_state(log: Path) -> Path:
    """The state lives beside its log: ``x.jsonl`` → ``x.state``."""
    return log.with_name(_stem(log) + ".state")


def default_ppl(log: Path) -> Path:
    """The ``ppl`` runs beside the log: ``x.jsonl`` → ``x.ppl.jsonl``."""
    return log.with_name(_stem(log) + ".ppl.jsonl")


class LogFiles(msgspec.Struct, frozen=True):
    """A log and every file that belongs to it (the one list every writer consults)."""

    log: Path
    state: Path | None = None
    ppl: Path | None = None
    extra: tuple[Path, ...] = msgspec.field(default=())

    def members(self) -> list[Path]:
        log = self.log
        out = [log, lock_path(log), torn_path(log), events_path(log),
               log.with_name(log.name + EVENTS_TORN), index_path(log),
               self.state or default_state(log), self.ppl or default_ppl(log)]
        state = self.state or default_state(log)
        out.append(state.with_name(state.name + ".tmp"))
        out.extend(self.extra)
        return out

    def owns(self, target: Path) -> bool:
        """True when ``target`` is the log, a listed member, or any ``<log>.*`` side file
        (including the Caddy snapshots ``<log>.caddy-before-<ts>.json``)."""
        t = _canonical(target)
        if any(t == _canonical(p) for p in self.members()):
            return True
        log = _canonical(self.log)
        return t.parent == log.parent and (
            t.name.startswith(log.name + ".") or t.name.startswith(_stem(log) + ".state")
        )


def _canonical(p: Path) -> Path:
    try:
        return Path(os.path.realpath(p))
    except OSError:  # pragma: no cover - realpath does not raise on Linux
        return p.absolute()


def marker_line(kind: str, medium: str) -> str:
    """The first line that marks an output of ``kind`` (e.g. "cutover", "report")."""
    tag = f"{MARKER_PREFIX}{kind}"
    if medium in ("markdown", "html"):
        return f"<!-- {tag} -->"
    if medium == "jsonl":
        return '{"' + tag + '":true}'
    return f"# {tag}"


def carries_marker(target: Path, kind: str, medium: str) -> bool:
    try:
        with open(target, "rb") as fh:
            head = fh.read(512)
    except OSError:
        return False
    first = head.split(b"\n", 1)[0].strip()
    return first == marker_line(kind, medium).encode()


def guard_output(target: Path, logs: Iterable[LogFiles], *, kind: str, medium: str,
                 inputs: Iterable[Path] = ()) -> None:
    """Refuse (ConfigError, exit 2) a target that belongs to a log, is an input of the
    command, is not a regular file, or exists without this command's marker."""
    for files in logs:
        if files.owns(target):
            raise ConfigError(target, f"refusing to write here: it is {files.log} or one of "
                              "its side files (state, lock, events, index, ppl, torn)")
    t = _canonical(target)
    for p in inputs:
        if t == _canonical(p):
            raise ConfigError(target, "refusing to write over an input of this command")
    try:
        st = os.stat(target)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ConfigError(target, f"cannot check the output file: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(target, "refusing to write here: not a regular file")
    if not carries_marker(target, kind, medium):
        raise ConfigError(target, f"refusing to overwrite a file this command did not write "
                          f"(no '{marker_line(kind, medium)}' first line); pick a new name")


def write_atomic(target: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Temp file in the target's directory, fsync, rename over the target, fsync the dir."""
    import tempfile  # (with shutil, random: ~4 ms a reader never pays)

    directory = target.parent if str(target.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise StorageError(f"{target}: cannot write: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise StorageError(f"{target}: cannot write: {exc.strerror}") from None
    fsync_dir(directory)


@contextlib.contextmanager
def atomic_path(target: Path, *, mode: int = 0o644) -> Iterator[Path]:
    """A temporary path beside ``target`` for a writer that streams (e.g. a Parquet
    writer): when the block ends without an error the file is fsynced and renamed over
    ``target`` (the directory fsynced too); on an error it is removed and ``target`` is
    left as it was."""
    import tempfile  # (with shutil, random: ~4 ms a reader never pays)

    directory = target.parent if str(target.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise StorageError(f"{target}: cannot write: {exc.strerror}") from None
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise StorageError(f"{target}: cannot write: {exc.strerror}") from None
        raise
    fsync_dir(directory)


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new file in ``directory`` durable (best effort: a directory
    that cannot be opened or synced is left as it is)."""
    with contextlib.suppress(OSError):
        dfd = os.open(directory if str(directory) else ".", os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def write_output(target: Path, text: str, logs: Iterable[LogFiles], *, kind: str,
                 medium: str, inputs: Iterable[Path] = ()) -> None:
    """Guard, then write ``text`` atomically with the marker as its first line."""
    guard_output(target, logs, kind=kind, medium=medium, inputs=inputs)
    body = marker_line(kind, medium) + "\n" + text
    write_atomic(target, body.encode("utf-8", "surrogatepass"))
