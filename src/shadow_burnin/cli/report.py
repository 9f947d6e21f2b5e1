"""``bench``, ``recent`` and ``show``: reading the log."""

from __future__ import annotations

from pathlib import Path

import click

from shadow_burnin.app.evidence import summary_of
from shadow_burnin.app.logset import gather_set, shards_of
from shadow_burnin.app.rounds import recent_rounds, round_of
from shadow_burnin.cli.options import (
    bounded,
    first_log,
    load_config,
    logs_options,
    make_window,
    out_console,
    store_options,
    window_options,
)
from shadow_burnin.core import limits
from shadow_burnin.core.gates import SCOPES
from shadow_burnin.errors import LogError
from shadow_burnin.render.escape import json_bytes, term

__all__ = ["bench", "recent", "show", "summary_of"]  # summary_of: for the demo command


@click.command()
@logs_options
@window_options
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--by", "by", type=click.Choice(["source", "shard"]),
              help="Also one summary per source (run, mirror, legacy) or per shard (log).")
@click.option("--scope", type=click.Choice(SCOPES), default=None,
              help="Several logs: judge the gates on their pooled rounds or on each shard "
                   "(every shard must pass) [gates.scope].")
def bench(config_path: Path | None, log_specs: tuple[str, ...], state_path: Path | None,
          since: str | None, until: str | None, as_json: bool, by: str | None,
          scope: str | None) -> None:
    """Summarise the log(s): buckets, exact-match rate with its 95% interval, latency.

    \b
    Example:
      shadow-burnin bench --since 2026-04-20T00:00:00Z --json
      shadow-burnin bench --by source
      shadow-burnin bench --log 'fleet/*/burnin.jsonl' --by shard
      halo bench
    """
    cfg = load_config(config_path, {"gates": {"scope": scope}}, first_log(log_specs),
                      state_path)
    window = make_window(since, until)
    shards = shards_of(cfg, log_specs)
    fleet = gather_set(cfg, shards, window, bench=True, by_shard=by == "shard")
    summary, cutover = fleet.summary, fleet.evidence  # gates and drift over the same rounds
    logs = [s.path for s in shards]
    if as_json:
        out = summary.to_json()
        out["gates"] = cutover.report.to_json()
        out["drift"] = cutover.drift.to_json()
        if cutover.flip is not None:
            out["cutover"] = cutover.flip.to_json()
        if len(shards) > 1:
            out["shards"] = [s.name for s in shards]
            out["gates"]["scope"] = fleet.scope
        if by == "source":
            from shadow_burnin.app.sources import summaries_by_source

            out["by_source"] = {k: v.to_json() for k, v in summaries_by_source(
                logs, make_window(since, until)).items()}
        elif by == "shard":
            out["by_shard"] = {k: v.to_json() for k, v in fleet.by_shard.items()}
        click.echo(json_bytes(out, indent=True).decode())
    elif summary.rounds == 0:
        click.echo("no rounds")
        for note in summary.notes:
            click.echo(f"note: {term(note)}", err=True)
    else:
        from shadow_burnin.render.flip import flip_text
        from shadow_burnin.render.gates import drift_section, gates_table
        from shadow_burnin.render.summary import bench_table

        console = out_console()
        console.print(bench_table(summary))
        console.print(gates_table(cutover.report))
        flip = flip_text(cutover.flip)
        if flip is not None:
            console.print(flip)
        console.print(drift_section(cutover.drift))
        if by is not None:
            from shadow_burnin.render.sources import sources_table

            if by == "source":
                from shadow_burnin.app.sources import summaries_by_source

                console.print(sources_table(summaries_by_source(logs, make_window(since,
                                                                                   until))))
            else:
                console.print(sources_table(fleet.by_shard, key="shard"))


@click.command()
@store_options
@click.option("-n", "count", type=bounded(limits.COUNT), default=20, show_default=True,
              help="How many rounds.")
def recent(config_path: Path | None, log_path: Path | None, state_path: Path | None,
           count: int) -> None:
    """The last rounds: a glyph per bucket, prompt id, divergence offset, latencies.

    \b
    Example:
      shadow-burnin recent -n 50
    """
    cfg = load_config(config_path, None, log_path, state_path)
    records = recent_rounds(cfg, count)
    if not records:
        click.echo("no rounds")
        return
    from shadow_burnin.render.summary import recent_table  # rich: only to print tables

    out_console().print(recent_table(records))


@click.command()
@store_options
@click.argument("round_number", metavar="ROUND", type=bounded(limits.ROUND_NUMBER))
def show(config_path: Path | None, log_path: Path | None, state_path: Path | None,
         round_number: int) -> None:
    """Both replies of one round in full, the first divergence marked.

    Invisible characters are shown (· for nothing, ↵ newline, → tab, ⟨U+XXXX⟩ others).

    \b
    Example:
      shadow-burnin show 17
    """
    cfg = load_config(config_path, None, log_path, state_path)
    record = round_of(cfg, round_number)
    if record is None:
        raise LogError(cfg.paths.log, f"no round {round_number} in this log")
    from shadow_burnin.render.summary import show_round  # rich: only to print

    out_console().print(show_round(record))


COMMANDS = [bench, recent, show]
