"""``export --parquet DIR``: each shard's rounds as a Parquet file (``app.export``)."""

from __future__ import annotations

import time
from pathlib import Path

import click

from shadow_burnin.cli.options import (
    first_log,
    load_config,
    logs_options,
    make_window,
    out_console,
    window_options,
)
from shadow_burnin.render.escape import markup, term


@click.command()
@logs_options
@window_options
@click.option("--parquet", "out_dir", required=True,
              type=click.Path(path_type=Path, file_okay=False),
              help="Directory for the Parquet files (one per shard: a/burnin.jsonl → "
                   "a__burnin.parquet); created if missing.")
@click.option("--texts", is_flag=True, help="Also export both reply texts (v1_text, v2_text).")
@click.option("--quiet", is_flag=True, help="No progress output.")
def export(config_path: Path | None, log_specs: tuple[str, ...], state_path: Path | None,
           since: str | None, until: str | None, out_dir: Path, texts: bool,
           quiet: bool) -> None:
    """Export the rounds of one or more logs to Parquet (DuckDB, Spark, Trino, BigQuery).

    One row per round with every figure bench reads (buckets, latencies, TTFT, status,
    error codes, tokens, prefix match, divergence byte, forensics, re-fire, A/A); a
    rotated log is exported whole. An existing file is replaced only if an earlier
    export wrote it.

    \b
    Example:
      shadow-burnin export --parquet out/
      shadow-burnin export --log 'fleet/*/burnin.jsonl' --parquet out/ --texts
      duckdb -c "select count(*) from 'out/*.parquet'"
    """
    from shadow_burnin.app.export import export_logs, plan_export

    cfg = load_config(config_path, None, first_log(log_specs), state_path)
    window = make_window(since, until)
    shards, targets = plan_export(cfg, log_specs, out_dir)
    console = out_console()
    last = [0.0]

    def plain(shard: object, _done: int, _total: int, rows: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 5.0:
            last[0] = now
            click.echo(f"exporting {term(getattr(shard, 'name', ''))}: {rows:,} rounds",
                       err=True)

    if quiet:
        result = export_logs(cfg, shards, targets, texts=texts, window=window)
    elif console.is_terminal:
        from rich.progress import BarColumn, Progress, TextColumn

        with Progress(TextColumn("{task.description}"), BarColumn(),
                      TextColumn("{task.fields[rows]:,} rounds"), console=console,
                      transient=True) as bar:
            task = bar.add_task("export", total=1, rows=0)

            def live(shard: object, done: int, total: int, rows: int) -> None:
                bar.update(task, description=markup(getattr(shard, "name", "")),
                           completed=done, total=max(total, 1), rows=rows)

            result = export_logs(cfg, shards, targets, texts=texts, window=window,
                                 progress=live)
    else:
        result = export_logs(cfg, shards, targets, texts=texts, window=window,
                             progress=plain)
    for f in result.files:
        click.echo(f"wrote {term(f.path)}: {f.rows:,} rounds, {f.bytes:,} bytes "
                   f"({term(f.shard.name)})")
    for note in result.notes:
        click.echo(f"note: {term(note)}", err=True)


COMMANDS = [export]
