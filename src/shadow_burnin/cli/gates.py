"""``gates`` (the scriptable cutover verdict) and ``ack-halt``; the halt watch for ``run``."""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Callable
from pathlib import Path

import click
import orjson
from rich.console import Console

from shadow_burnin.app.evidence import gather
from shadow_burnin.cli.options import (
    load_config,
    make_window,
    out_console,
    store_options,
    window_options,
)
from shadow_burnin.config import Config
from shadow_burnin.core.halt import ack_event, halt_status
from shadow_burnin.errors import ConfigError, LogError, StorageError
from shadow_burnin.io.clock import now_iso
from shadow_burnin.io.log.events import append_event
from shadow_burnin.io.log.logread import log_events
from shadow_burnin.io.log.store import Store
from shadow_burnin.io.run.haltwatch import HaltWatch
from shadow_burnin.render.cutover import cutover_markdown
from shadow_burnin.render.gates import gates_table, halt_alert


def halt_watch(cfg: Config, store: Store, warn: Callable[[str], None],
               err: Console) -> HaltWatch | None:
    """The ``run`` observer for ``[halt]`` (None when ``halt.enabled = false``)."""
    if not cfg.halt.enabled:
        return None

    def loud(message: str) -> None:
        err.print(halt_alert(message), soft_wrap=False)  # the box wraps its own text

    context = {"log": cfg.paths.log, "v1": cfg.v1.url, "v2": cfg.v2.url}
    watch = HaltWatch(cfg.halt, store, loud=loud, warn=warn, context=context)
    watch.prime()
    return watch


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StorageError(f"{path}: cannot write ({exc.strerror})") from None


@click.command()
@store_options
@window_options
@click.option("--write", "write_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Also write the cutover document (Markdown), e.g. CUTOVER.md.")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
@click.option("--statistical/--no-statistical", default=None,
              help="Wilson lower bound for exact match, bootstrap interval for the p95 gap "
                   "[gates.statistical].")
def gates(config_path: Path | None, log_path: Path | None, state_path: Path | None,
          since: str | None, until: str | None, write_path: Path | None, as_json: bool,
          statistical: bool | None) -> None:
    """Judge the cutover gates: gate | target | current | state.

    Each gate is ✓ pass, ✗ fail or ⌛ waiting (more rounds or time needed). Figures come
    from the log's timestamps and the latest `ppl` run, so a re-run on the same files
    gives the same answer. Exit status: 0 all green, 1 any red, 3 only waiting.
    Gates are set in the config ([gates], [gates.NAME]).

    \b
    Example:
      shadow-burnin gates --write CUTOVER.md
      shadow-burnin gates --json --statistical && echo "cut over"
    """
    cfg = load_config(config_path, {"gates": {"statistical": statistical}}, log_path,
                      state_path)
    ev = gather(cfg, make_window(since, until))
    if write_path is not None:
        write_atomically(write_path, cutover_markdown(
            ev.report, ev.summary, ev.drift, ev.halt, ev.ppl, log=cfg.paths.log))
    if as_json:
        out = ev.report.to_json()
        out["halt"] = ev.halt.to_json()
        out["drift"] = ev.drift.to_json()
        click.echo(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    else:
        console = out_console()
        console.print(gates_table(ev.report))
        if write_path is not None:
            console.print(f"wrote {write_path}", highlight=False)
    sys.exit(ev.report.exit_code)


@click.command("ack-halt")
@store_options
@click.option("--reason", required=True, help="Why the halt is forgiven (logged).")
@click.option("--by", help="Who acknowledges it [$USER].")
@click.option("--wait", "wait_s", type=click.FloatRange(0), default=0.0, hidden=True,
              help="Ignored (kept for old scripts): the acknowledgement is logged at once.")
def ack_halt(config_path: Path | None, log_path: Path | None, state_path: Path | None,
             reason: str, by: str | None, wait_s: float) -> None:
    """Acknowledge the active no-match halt; `gates` stops being red for it.

    The reason is logged as an `ack-halt` event in <log>.events.jsonl at once, whether
    or not a `run` holds the log (a running burn-in picks it up at its next round).

    \b
    Example:
      shadow-burnin ack-halt --reason "v2 rebuilt with the tokenizer fix (PR 812)"
    """
    cfg = load_config(config_path, None, log_path, state_path)
    reason = reason.strip()
    if not reason:
        raise ConfigError(None, "--reason must say why the halt is acknowledged")
    by = by or _user()
    log = Path(cfg.paths.log)
    if not log.exists():
        raise LogError(log, "no such log file (run `shadow-burnin run` first, or pass --log)")
    status = halt_status(log_events(log))
    if not status.active:
        click.echo(f"no active halt in {log}; nothing to acknowledge")
        return
    halt = status.halt or {}
    append_event(log, ack_event(now_iso(), reason, halt, by))  # one O_APPEND write + fsync
    click.echo(f"acknowledged the halt at round {halt.get('round')}: {reason}")


def _user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None


COMMANDS = [gates, ack_halt]
