"""``status``: how a running burn-in is going."""

from __future__ import annotations

import time
from pathlib import Path

import click
import orjson

from shadow_burnin.cli.options import load_config, out_console, store_options


@click.command()
@store_options
@click.option("--window", "window_min", type=click.FloatRange(0.1), default=10.0,
              show_default=True, help="Minutes of recent rounds the rate is measured over.")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(config_path: Path | None, log_path: Path | None, state_path: Path | None,
           window_min: float, as_json: bool) -> None:
    """Rounds per minute, age of the last committed round, the halt, and an ETA for each
    waiting gate at the current rate.

    \b
    Example:
      shadow-burnin status --log burnin.jsonl
    """
    from shadow_burnin.app.dashboard import Dashboard
    from shadow_burnin.app.dashboard import status as status_of
    from shadow_burnin.render.status import status_text

    cfg = load_config(config_path, None, log_path, state_path)
    st = status_of(Dashboard(cfg), time.time(), window_min * 60.0)
    if as_json:
        click.echo(orjson.dumps(st, option=orjson.OPT_INDENT_2).decode())
    else:
        out_console().print(status_text(st))


COMMANDS = [status]
