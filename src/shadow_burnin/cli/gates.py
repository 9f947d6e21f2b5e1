"""``gates`` (the scriptable cutover verdict) and ``ack-halt``: thin shells over
``app.evidence`` and ``app.ack``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from shadow_burnin.app.ack import acknowledge
from shadow_burnin.app.logset import shards_of
from shadow_burnin.app.report import cutover
from shadow_burnin.cli.options import (
    first_log,
    load_config,
    logs_options,
    make_window,
    out_console,
    store_options,
    window_options,
)
from shadow_burnin.core.gates import SCOPES
from shadow_burnin.render.escape import json_bytes, term
from shadow_burnin.render.flip import flip_text
from shadow_burnin.render.gates import gates_table


@click.command()
@logs_options
@window_options
@click.option("--write", "write_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Also write the cutover document (Markdown), e.g. CUTOVER.md. Refused: the "
                   "log, its state/lock/events/any side file, an input, or an existing file "
                   "this command did not write (its first line is a shadow-burnin marker).")
@click.option("--report", "report_path", type=click.Path(path_type=Path, dir_okay=False),
              help="With --write: also write the self-contained HTML report of the same "
                   "rounds here (same refusals) and link it from the document, with its "
                   "size, SHA-256 and headline figures, e.g. --report report.html.")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
@click.option("--statistical/--no-statistical", default=None,
              help="Wilson lower bound for exact match, bootstrap interval for the p95 gap "
                   "[gates.statistical].")
@click.option("--scope", type=click.Choice(SCOPES), default=None,
              help="Several logs: judge their pooled rounds, or each shard (every shard "
                   "must pass; the table names the shard) [gates.scope].")
def gates(config_path: Path | None, log_specs: tuple[str, ...], state_path: Path | None,
          since: str | None, until: str | None, write_path: Path | None,
          report_path: Path | None, as_json: bool,
          statistical: bool | None, scope: str | None) -> None:
    """Judge the cutover gates: gate | target | current | state.

    Each gate is ✓ pass, ✗ fail or ⌛ waiting (more rounds or time needed). Figures come
    from the log's timestamps and the latest `ppl` run, so a re-run on the same files
    gives the same answer. Exit status: 0 all green, 1 any red, 3 only waiting.
    Gates are set in the config ([gates], [gates.NAME]).

    \b
    Example:
      shadow-burnin gates --write CUTOVER.md --report report.html
      shadow-burnin gates --json --statistical && echo "cut over"
      shadow-burnin gates --log 'fleet/*/burnin.jsonl' --scope shard
    """
    cfg = load_config(config_path, {"gates": {"statistical": statistical, "scope": scope}},
                      first_log(log_specs), state_path)
    # the outputs are refused before the (long) scan, and again at the write
    done = cutover(cfg, make_window(since, until), write_path, report_path,
                   shards=shards_of(cfg, log_specs))
    ev = done.evidence
    if as_json:
        out = ev.report.to_json()
        out["halt"] = ev.halt.to_json()
        out["drift"] = ev.drift.to_json()
        if ev.flip is not None:
            out["cutover"] = ev.flip.to_json()
        click.echo(json_bytes(out, indent=True).decode())
    else:
        console = out_console()
        console.print(gates_table(ev.report))
        flip = flip_text(ev.flip)
        if flip is not None:
            console.print(flip)
        for path in (done.report.path if done.report else None, done.document):
            if path is not None:
                console.print(f"wrote {term(path)}", highlight=False, markup=False)
    sys.exit(ev.report.exit_code)


@click.command("ack-halt")
@store_options
@click.option("--reason", required=True, help="Why the halt is forgiven (logged).")
@click.option("--by", help="Who acknowledges it [$USER].")
def ack_halt(config_path: Path | None, log_path: Path | None, state_path: Path | None,
             reason: str, by: str | None) -> None:
    """Acknowledge the active no-match halt; `gates` stops being red for it.

    The reason is appended as an `ack-halt` event to <log>.events.jsonl at once, whether
    or not a `run` holds the log; a running burn-in reads it at its next commit.

    \b
    Example:
      shadow-burnin ack-halt --log burnin.jsonl --reason "v2 rebuilt with the tokenizer fix"
    """
    cfg = load_config(config_path, None, log_path, state_path)
    result = acknowledge(cfg.paths.log, reason, by)
    log = term(cfg.paths.log)
    if not result.acknowledged:
        click.echo(f"no active halt in {log}; nothing to acknowledge")
        return
    where = " (the running burn-in reads it at its next commit)" if result.running else ""
    click.echo(f"acknowledged the halt at round {term(result.halt.get('round'))} in {log}: "
               f"{term(result.reason)}{where}")


COMMANDS = [gates, ack_halt]
