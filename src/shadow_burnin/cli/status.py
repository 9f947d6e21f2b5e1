"""``status``: how a running burn-in is going (and the liveness alert)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click
import orjson

from shadow_burnin.cli.options import first_log, load_config, logs_options, out_console
from shadow_burnin.config import parse_duration
from shadow_burnin.errors import ConfigError
from shadow_burnin.render.escape import term


def _duration(value: str, what: str) -> float:
    try:
        return parse_duration(value, what)
    except ValueError as exc:
        raise ConfigError(None, str(exc)) from None


@click.command()
@logs_options
@click.option("--window", "window_min", type=click.FloatRange(0.1), default=10.0,
              show_default=True, help="Minutes of recent rounds the rate is measured over.")
@click.option("--stall", default=None,
              help="Alert when no round was committed for this long (default: [alerts] "
                   "stall of the config, 10m).")
@click.option("--alert", "send", is_flag=True,
              help="Send each liveness alert (stall, a side's unreachable spike) through "
                   "the halt's alert channel ([halt] on_halt / webhook); for a cron job.")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(config_path: Path | None, log_specs: tuple[str, ...], state_path: Path | None,
           window_min: float, stall: str | None, send: bool, as_json: bool) -> None:
    """Rounds per minute, age of the last committed round, the halt, an ETA for each
    waiting gate at the current rate, and liveness alerts (no round for --stall, or a
    side's unreachable spike: the halt covers only no-match). Exit status 1 when there is
    a liveness alert. Several logs (--log repeated or a glob): the pooled figures, one
    line per shard, each shard's alerts; a halt in any shard is shown.

    \b
    Example:
      shadow-burnin status --log burnin.jsonl
      shadow-burnin status --log 'fleet/*/burnin.jsonl'
      */5 * * * * shadow-burnin status --log burnin.jsonl --alert --stall 10m
    """
    from shadow_burnin.app.alerting import rule_for, send_alerts
    from shadow_burnin.app.dashboard import dashboard_for, fleet_of, fleet_status
    from shadow_burnin.render.status import status_text

    cfg = load_config(config_path, None, first_log(log_specs), state_path)
    rule = rule_for(cfg, None if stall is None else _duration(stall, "--stall"))
    view = dashboard_for(cfg, fleet_of(cfg, log_specs))
    st = fleet_status(view, time.time(), window_min * 60.0, rule)
    if as_json:
        click.echo(orjson.dumps(st, option=orjson.OPT_INDENT_2).decode())
    else:
        out_console().print(status_text(st))
    if send and st["alerts"]:
        for kind, line in send_alerts(cfg, st):
            click.echo(f"alert {term(kind)}: {term(line)}", err=True)
    sys.exit(1 if st["alerts"] else 0)


COMMANDS = [status]
