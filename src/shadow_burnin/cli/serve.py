"""``serve``: the live dashboard and ``/metrics`` over the log."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any

import click

from shadow_burnin.cli.options import first_log, load_config, logs_options
from shadow_burnin.errors import ConfigError, ShadowBurninError
from shadow_burnin.render.escape import term


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_from_env(var: str | None) -> str | None:
    if var is None:
        return None
    value = os.environ.get(var)
    if not value:
        raise ConfigError(None, f"--auth-token-env {var}: the environment variable is unset "
                          "or empty")
    return value


def preload(app: Any) -> None:
    """Read the log once before listening (a large log's first read forks workers: done
    here, in the main thread); a log that cannot be read yet is shown by the pages."""
    import time

    from shadow_burnin.web.app import DASH

    started = time.perf_counter()
    try:
        snap = app[DASH].snapshot()
        app[DASH].overview()
    except ShadowBurninError as exc:
        click.echo(f"note: {term(exc)}", err=True)
        return
    click.echo(f"read {len(snap.columns):,} rounds in {time.perf_counter() - started:.1f} s",
               err=True)


@click.command()
@logs_options
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind (a non-loopback address prints a warning).")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True)
@click.option("--auth-token-env", "token_env", metavar="VAR",
              help="Protect every page (login form, cookie) and /metrics (Bearer) with the "
                   "token in this environment variable (never pass a token on the command "
                   "line).")
def serve(config_path: Path | None, log_specs: tuple[str, ...], state_path: Path | None,
          host: str, port: int, token_env: str | None) -> None:
    """The dashboard (overview, plots, divergences, round pages) and /metrics, live while
    `run` writes the log. Several logs (--log repeated or a glob): the pooled figures, a
    per-shard table, each shard's pages at ?shard=NAME; a halt in any shard is shown.

    \b
    Example:
      shadow-burnin serve --log burnin.jsonl            # http://127.0.0.1:8765/
      shadow-burnin serve --log 'fleet/*/burnin.jsonl'  # a fleet, pooled
      ssh -L 8765:127.0.0.1:8765 burnin-host            # from your machine
    """
    from aiohttp import web

    from shadow_burnin.app.dashboard import fleet_of
    from shadow_burnin.web.app import make_app

    cfg = load_config(config_path, None, first_log(log_specs), state_path)
    shards = fleet_of(cfg, log_specs)
    token = token_from_env(token_env)
    if not is_loopback(host):
        click.echo(f"warning: serving on {term(host)}, reachable from other machines"
                   + ("" if token else " WITHOUT authentication (use --auth-token-env VAR, "
                      "or keep 127.0.0.1 and an SSH tunnel)"), err=True)
    app = make_app(cfg, token, shards)
    preload(app)
    shown = f"[{host}]" if ":" in host else host
    what = f"{len(shards)} shards" if shards else cfg.paths.log
    click.echo(f"serving {term(what)} on http://{term(shown)}:{port}/ "
               "(Ctrl-C to stop)", err=True)
    web.run_app(app, host=host, port=port, print=None, access_log=None)


COMMANDS = [serve]
