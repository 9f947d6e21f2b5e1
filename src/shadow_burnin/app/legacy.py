"""``import-legacy``: the earlier bash tool's log → a shadow-burnin log (the use case; the
line format is ``io.log.legacy``'s).

Everything that can be refused is checked before the store creates a file: the legacy
log exists and is one; the legacy files differ from ``--log``/``--state``; the target
log and state are not each other's side files, not an input (the legacy log and state,
the config), not a side file of the legacy log; ``--state`` is not the old tool's state
file; and every legacy line is valid (``legacy.tally`` reads them all first). A target
log that already holds rounds is refused unless ``append``.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import islice
from pathlib import Path
from typing import Any

import orjson

from shadow_burnin.app.files import check_store_paths, inputs_of
from shadow_burnin.config import Config
from shadow_burnin.errors import ConfigError, LogError, StateError
from shadow_burnin.inputs import STATE_MAX_BYTES, check_input, read_input
from shadow_burnin.io.log import legacy
from shadow_burnin.io.log.sidecars import LogFiles
from shadow_burnin.io.log.store import Store

FIRST_LINE_NOTE = ("the earlier tool logged only the first line of each reply: imported "
                   "rounds compare first lines, not whole replies")
BATCH = 10_000  # rounds per write + fsync


def _refuse_legacy_as_ours(state_path: Path) -> None:
    """``--state`` names OUR state; catch the earlier tool's state file passed there."""
    if not state_path.is_file():
        return
    try:
        orjson.loads(read_input(state_path, StateError, "state", max_bytes=STATE_MAX_BYTES))
        return
    except (orjson.JSONDecodeError, StateError):
        pass
    try:
        legacy.read_legacy_state(state_path)
    except StateError:
        return
    raise StateError(state_path, "this is the earlier tool's state file; pass it as "
                     "--legacy-state (--state names shadow-burnin's own state file)")


def _same_file(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def import_rounds(source: Path, store: Store, count: int, *, append: bool) -> tuple[int, int]:
    """Append the first ``count`` legacy rounds to an open store; (first, last) round numbers."""
    base = store.state.last_round
    if base and not append:
        raise LogError(store.log, f"already holds rounds (up to round {base}); refusing to "
                       "import into it: pass --append to continue its numbering, or choose "
                       "another --log")
    last = base
    batch: list[dict[str, Any]] = []
    for _line, _obj, record in islice(legacy.iter_legacy(source, base + 1), count):
        batch.append(record)
        last = record["round"]
        if len(batch) == BATCH:  # one write + fsync per batch, not per round
            store.append_many(batch)
            batch = []
    if batch:
        store.append_many(batch)
    return base + 1, last


def import_legacy(cfg: Config, source: Path, legacy_state: Path | None, *, append: bool,
                  warn: Callable[[str], None]) -> dict[str, Any]:
    """Check everything, import the legacy log into ``cfg``'s log, and return the report
    (``render.legacy.report_lines`` shows it; ``--json`` prints it)."""
    log, state = Path(cfg.paths.log), Path(cfg.paths.state)
    if not check_input(source, LogError, "legacy log"):
        raise LogError(source, "no such legacy log file")
    if not legacy.is_legacy_log(source):
        raise LogError(source, "not a log of the earlier bash tool (its first line has no "
                       "prompt_idx/full_match/v1_unreachable key, or has a schema key)")
    if _same_file(source, log) or (legacy_state and _same_file(legacy_state, state)):
        raise LogError(source, "the legacy files and shadow-burnin's --log/--state must differ")
    check_store_paths(log, state, [*inputs_of(cfg), source, *([legacy_state] if legacy_state
                                                                else [])])
    check_input(log, LogError, "log")
    check_input(state, StateError, "state")
    _refuse_legacy_as_ours(state)
    for target in (log, state):
        if LogFiles(source).owns(target):
            raise ConfigError(target, f"refusing to write a side file of {source}")
    old_state = legacy.read_legacy_state(legacy_state) if legacy_state else None
    tally = legacy.tally(source)  # validates every line before anything is written
    store = Store(log, state)
    for message in store.open().warnings:
        warn(message)
    try:
        first, last = import_rounds(source, store, tally.rounds, append=append)
    finally:
        store.close()
    return {
        "source": str(source), "log": str(log), "state": str(state),
        "imported": last - first + 1, "first_round": first, "last_round": last,
        "tally": tally.to_json(), "legacy_state": None if legacy_state is None
        else str(legacy_state),
        "state_comparison": None if old_state is None
        else legacy.compare_state(old_state, tally),
        "notes": [FIRST_LINE_NOTE],
    }
