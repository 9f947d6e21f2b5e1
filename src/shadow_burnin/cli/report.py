"""``bench``, ``recent`` and ``show``: reading the log."""

from __future__ import annotations

from pathlib import Path

import click

from shadow_burnin.app.evidence import judge, scan_summary, summary_of
from shadow_burnin.app.files import require_log
from shadow_burnin.cli.options import (
    bounded,
    load_config,
    make_window,
    out_console,
    store_options,
    window_options,
)
from shadow_burnin.core import limits
from shadow_burnin.errors import LogError
from shadow_burnin.io.log.logread import find_round, last_rounds
from shadow_burnin.render.escape import json_bytes, term

__all__ = ["bench", "recent", "show", "summary_of"]  # summary_of: for the demo command


@click.command()
@store_options
@window_options
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--by", "by", type=click.Choice(["source"]),
              help="Also one summary per source (run, mirror, legacy).")
def bench(config_path: Path | None, log_path: Path | None, state_path: Path | None,
          since: str | None, until: str | None, as_json: bool, by: str | None) -> None:
    """Summarise the log: buckets, exact-match rate with its 95% interval, latency.

    \b
    Example:
      shadow-burnin bench --since 2026-04-20T00:00:00Z --json
      shadow-burnin bench --by source
      halo bench
    """
    cfg = load_config(config_path, None, log_path, state_path)
    window = make_window(since, until)
    summary, result = scan_summary(Path(cfg.paths.log), window)
    cutover = judge(cfg, summary, result, window)  # gates and drift over the same rounds
    if as_json:
        out = summary.to_json()
        out["gates"] = cutover.report.to_json()
        out["drift"] = cutover.drift.to_json()
        if cutover.flip is not None:
            out["cutover"] = cutover.flip.to_json()
        if by == "source":
            from shadow_burnin.app.sources import summaries_by_source

            out["by_source"] = {k: v.to_json() for k, v in summaries_by_source(
                Path(cfg.paths.log), make_window(since, until)).items()}
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
        if by == "source":
            from shadow_burnin.app.sources import summaries_by_source
            from shadow_burnin.render.sources import sources_table

            console.print(sources_table(summaries_by_source(Path(cfg.paths.log),
                                                            make_window(since, until))))


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
    from shadow_burnin.app.burnin import known_secrets, redact_errors  # not on bench's path

    keys = known_secrets(cfg)
    records = [redact_errors(r, keys) for r in last_rounds(require_log(cfg.paths.log), count)]
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
    record = find_round(require_log(cfg.paths.log), round_number)
    if record is None:
        raise LogError(cfg.paths.log, f"no round {round_number} in this log")
    from shadow_burnin.app.burnin import known_secrets, redact_errors  # not on bench's path
    from shadow_burnin.render.summary import show_round

    out_console().print(show_round(redact_errors(record, known_secrets(cfg))))


COMMANDS = [bench, recent, show]
