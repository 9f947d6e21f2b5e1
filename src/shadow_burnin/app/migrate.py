"""``migrate``: write a log in this version's layout from a log in the older one.

The older layout kept A/A pairs and events as extra lines of the log (``"kind": "aa"``
right after its round, ``"kind": "event"`` between rounds), so ``wc -l`` did not count
rounds. :func:`migrate` reads such a log (never changing it) and writes a new log with
exactly one line per round, each A/A pair inside its round (``"aa"``), and the events
in the new log's ``<log>.events.jsonl`` (the old log's inline events, then those of
its own events file, in time order). An A/A line with no round right before it (never
written by ``run``, but a hand-edited log may have one) is kept as an ``aa-orphan``
event, so nothing is lost.

Both outputs are written to temporary files beside the target, fsynced and renamed
into place; a target (or its events file) that exists, or that is one of the old log's
own files, is refused. No state file is written: ``run`` and the readers rebuild it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import msgspec
import orjson

from shadow_burnin.core.records import RecordKind, embed_aa, record_kind
from shadow_burnin.errors import ConfigError, LogError, StorageError
from shadow_burnin.io.log import legacy
from shadow_burnin.io.log.events import iter_event_file
from shadow_burnin.io.log.logread import iter_records
from shadow_burnin.io.log.sidecars import LogFiles, events_path


class Migrated(msgspec.Struct, frozen=True):
    rounds: int
    aa_pairs: int
    events: int
    orphans: int
    log: Path
    events_file: Path


def migrate(old: Path, new: Path, *, state: Path | None = None) -> Migrated:
    """Write ``new`` (and its events file) from ``old``; ``old`` is only read."""
    if legacy.is_legacy_log(old):
        raise LogError(old, "the earlier bash tool's log: use `shadow-burnin import-legacy`")
    _refuse_target(old, new, state)
    rounds = aa = orphans = 0
    inline: list[dict[str, Any]] = []
    with _staged(new) as out:
        pending: dict[str, Any] | None = None
        for kind, record in _records(old):
            if kind is RecordKind.ROUND:
                if pending is not None:
                    out.write(orjson.dumps(pending, option=orjson.OPT_APPEND_NEWLINE))
                pending = record
                rounds += 1
            elif kind is RecordKind.AA:
                if pending is not None and pending.get("round") == record.get("round") \
                        and "aa" not in pending:
                    embed_aa(pending, record)
                    aa += 1
                else:
                    orphans += 1
                    inline.append({"kind": "event", "event": "aa-orphan",
                                   "ts": record.get("ts"), "record": record})
            elif kind is RecordKind.EVENT:
                inline.append(record)
            else:
                inline.append({"kind": "event", "event": "unknown-record",
                               "ts": record.get("ts"), "record": record})
        if pending is not None:
            out.write(orjson.dumps(pending, option=orjson.OPT_APPEND_NEWLINE))
        events = [*inline, *iter_event_file(old)]
        events.sort(key=lambda e: str(e.get("ts") or ""))  # stable: log order on ties
        if events:
            with _staged(events_path(new)) as ev:
                for event in events:
                    ev.write(orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE))
    return Migrated(rounds, aa, len(events), orphans, new, events_path(new))


def _records(old: Path) -> Iterator[tuple[RecordKind, dict[str, Any]]]:
    """The old log's lines as they are (embedded pairs are not split out again)."""
    for _line, _t, record in iter_records(old, split_aa=False):
        yield record_kind(record), record


def _refuse_target(old: Path, new: Path, state: Path | None) -> None:
    if LogFiles(old, state).owns(new) or _same(old, new):
        raise ConfigError(new, f"refusing to write here: it is {old} or one of its side files")
    for target in (new, events_path(new)):
        if os.path.lexists(target):
            raise ConfigError(target, "exists: migrate writes a new log and never "
                              "overwrites a file; pick a new --log")
    if not new.parent.is_dir():
        raise ConfigError(new, "its directory does not exist")


def _same(a: Path, b: Path) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


@contextlib.contextmanager
def _staged(target: Path) -> Iterator[BinaryIO]:
    """A temp file beside ``target``; on success fsynced and linked as ``target`` (never
    replacing a file that appeared meanwhile), else removed."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise StorageError(f"{target}: cannot write: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.link(tmp, target)  # fails if the target exists: no overwrite, ever
    except FileExistsError:
        raise ConfigError(target, "appeared while migrating; nothing was overwritten") from None
    except OSError as exc:
        raise StorageError(f"{target}: cannot write: {exc.strerror}") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
