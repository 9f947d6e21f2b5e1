"""``import-legacy``: convert the earlier bash tool's log into a shadow-burnin log."""

from __future__ import annotations

from itertools import islice
from pathlib import Path
from typing import Any

import click
import orjson

from shadow_burnin.app.files import check_store_paths, inputs_of
from shadow_burnin.cli.options import load_config, store_options
from shadow_burnin.core.records import BUCKETS
from shadow_burnin.errors import ConfigError, LogError, StateError
from shadow_burnin.inputs import STATE_MAX_BYTES, check_input, read_input
from shadow_burnin.io.log import legacy
from shadow_burnin.io.log.sidecars import LogFiles
from shadow_burnin.io.log.store import Store
from shadow_burnin.render.escape import json_bytes, term

FIRST_LINE_NOTE = ("the earlier tool logged only the first line of each reply: imported "
                   "rounds compare first lines, not whole replies")


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
        if len(batch) == 10_000:  # one write + fsync per batch, not per round
            store.append_many(batch)
            batch = []
    if batch:
        store.append_many(batch)
    return base + 1, last


def _table(rows: list[tuple[str, Any, Any]], head: tuple[str, str, str]) -> list[str]:
    width = max(len(r[0]) for r in [head, *rows])
    cells = [(k, "-" if a is None else str(a), "-" if b is None else str(b))
             for k, a, b in [head, *rows]]
    w1 = max(len(c[1]) for c in cells)
    w2 = max(len(c[2]) for c in cells)
    return [f"  {k:<{width}}  {a:>{w1}}  {b:>{w2}}" for k, a, b in cells]


def report_lines(out: dict[str, Any]) -> list[str]:
    tally = out["tally"]
    lines = [f"imported {out['imported']} rounds from {out['source']} into {out['log']}"
             + (f" (rounds {out['first_round']}–{out['last_round']})" if out["imported"] else "")]
    lines.append("buckets: the old tool's verdicts, then re-classified from the two texts")
    lines += _table([(b, tally["old_buckets"][b], tally["buckets"][b]) for b in BUCKETS],
                    ("bucket", "old tool", "re-classified"))
    moves = ", ".join(f"{m['old']} → {m['new']} {m['rounds']}" for m in tally["moves"])
    lines.append(f"re-bucketed: {tally['rebucketed']} of {tally['rounds']} pairs"
                 + (f" ({moves})" if moves else ""))
    if tally["prefix_chars_changed"]:
        lines.append(f"prefix_match_chars re-computed differently in "
                     f"{tally['prefix_chars_changed']} rounds")
    comparison = out.get("state_comparison")
    if comparison is not None:
        lines.append(f"legacy state {out['legacy_state']} vs the log:")
        lines += _table([(r["key"], r["state"], r["log"]) for r in comparison["rows"]],
                        ("counter", "state", "log"))
        lines += [f"  - {note}" for note in comparison["notes"]]
    lines.append(f"note: {FIRST_LINE_NOTE}")
    return lines


@click.command("import-legacy")
@store_options
@click.argument("source", metavar="LOG", type=click.Path(path_type=Path))
@click.option("--legacy-state", "legacy_state", type=click.Path(path_type=Path),
              help="The earlier tool's state file (KEY=VAL lines), compared with LOG.")
@click.option("--append", is_flag=True,
              help="Import into a log that already has rounds, numbering after its last.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def import_legacy(config_path: Path | None, log_path: Path | None, state_path: Path | None,
                  source: Path, legacy_state: Path | None, append: bool, as_json: bool) -> None:
    """Import the earlier bash tool's JSONL log (LOG) into the shadow-burnin log.

    Every pair is re-classified with shadow-burnin's byte-level definitions (the old tool
    called any shared first character "prefix-only"); the old verdict is kept under
    "legacy". Texts hold only the first line of each reply. Refuses a log that already
    has rounds unless --append. --state/--log name shadow-burnin's own files; the old
    tool's state file goes to --legacy-state.

    \b
    Example:
      shadow-burnin import-legacy old/shadow-burnin.jsonl \\
          --legacy-state old/shadow-burnin.state --log burnin.jsonl
      shadow-burnin bench --log burnin.jsonl
    """
    cfg = load_config(config_path, None, log_path, state_path)
    log, state = Path(cfg.paths.log), Path(cfg.paths.state)
    if not check_input(source, LogError, "legacy log"):
        raise LogError(source, "no such legacy log file")
    if not legacy.is_legacy_log(source):
        raise LogError(source, "not a log of the earlier bash tool (its first line has no "
                       "prompt_idx/full_match/v1_unreachable key, or has a schema key)")
    if _same_file(source, log) or (legacy_state and _same_file(legacy_state, state)):
        raise LogError(source, "the legacy files and shadow-burnin's --log/--state must differ")
    # the target log/state: not each other's side files, not an input (the legacy log,
    # the legacy state, the config), not a side file of the legacy log
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
        click.echo(f"warning: {term(message)}", err=True)
    try:
        first, last = import_rounds(source, store, tally.rounds, append=append)
    finally:
        store.close()
    out: dict[str, Any] = {
        "source": str(source), "log": str(log), "state": str(state),
        "imported": last - first + 1, "first_round": first, "last_round": last,
        "tally": tally.to_json(), "legacy_state": None if legacy_state is None
        else str(legacy_state),
        "state_comparison": None if old_state is None
        else legacy.compare_state(old_state, tally),
        "notes": [FIRST_LINE_NOTE],
    }
    if as_json:
        click.echo(json_bytes(out, indent=True).decode())
    else:
        click.echo(term("\n".join(report_lines(out))))


COMMANDS = [import_legacy]
