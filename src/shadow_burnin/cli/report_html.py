"""``report --html FILE``: one self-contained HTML report of the burn-in."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from shadow_burnin.app import report as report_app
from shadow_burnin.cli.options import (
    first_log,
    load_config,
    logs_options,
    make_window,
    window_options,
)
from shadow_burnin.render.escape import term


@click.command("report")
@logs_options
@window_options
@click.option("--html", "html_path", required=True,
              type=click.Path(path_type=Path, dir_okay=False),
              help="The HTML file to write (refused if it is the log, a side file, or a "
                   "file this command did not write).")
@click.option("--divergences", "first", type=click.IntRange(0, 1000), default=20,
              show_default=True, help="How many divergent rounds to show side by side.")
def report(config_path: Path | None, log_specs: tuple[str, ...], state_path: Path | None,
           since: str | None, until: str | None, html_path: Path, first: int) -> None:
    """Write one self-contained HTML file: overview, plots, gates, worst prompts and the
    first divergences side by side (inline SVG and CSS; no script, no network). Several
    logs (--log repeated or a glob): the pooled figures and a per-shard table.

    \b
    Example:
      shadow-burnin report --html burnin-report.html --since 2026-11-27T00:00:00Z
      shadow-burnin report --log 'fleet/*/burnin.jsonl' --html fleet-report.html
    """
    from shadow_burnin.app.dashboard import fleet_of

    cfg = load_config(config_path, None, first_log(log_specs), state_path)
    shards = fleet_of(cfg, log_specs)
    started = time.perf_counter()
    if not sys.stderr.isatty():
        click.echo("report: reading the log …", err=True)
    out = report_app.write(cfg, html_path, make_window(since, until), first, shards)
    click.echo(f"wrote {term(out.path)}: {out.bytes:,} bytes, {out.rounds:,} rounds, "
               f"{out.divergences:,} divergent, in {time.perf_counter() - started:.1f} s")


COMMANDS = [report]
