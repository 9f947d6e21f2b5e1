"""``cutover`` and ``rollback``: flip Caddy's route to v2 on green gates, and back."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from shadow_burnin.app import cutover as app
from shadow_burnin.cli.options import load_config, out_console, store_options
from shadow_burnin.config import parse_duration
from shadow_burnin.errors import ConfigError, ProxyError
from shadow_burnin.render import escape
from shadow_burnin.render.flip import progress_line, result_view
from shadow_burnin.render.gates import gates_table

EXIT_HELP = "\n".join(f"  {code}  {text}" for code, text in app.EXIT_CODES)


def caddy_options(fn: Any) -> Any:
    fn = click.option("--caddyfile", "caddyfile", type=click.Path(path_type=Path,
                      dir_okay=False), help="Also edit this Caddyfile (validated with `caddy "
                      "adapt`, written atomically, backup beside it) [cutover.caddyfile].")(fn)
    fn = click.option("--route", help="Path matcher of the route users reach v1 by "
                      "[cutover.route: /v1/*].")(fn)
    fn = click.option("--caddy", "caddy_url", help="Caddy's admin endpoint "
                      "[cutover.caddy: http://127.0.0.1:2019].")(fn)
    return fn


def _config(config_path: Path | None, log_path: Path | None, state_path: Path | None,
            caddy_url: str | None, route: str | None, extra: dict[str, Any] | None = None
            ) -> Any:
    cut = {"caddy": caddy_url, "route": route, **(extra or {})}
    return load_config(config_path, {"cutover": cut}, log_path, state_path)


def _finish(result: app.Result, console: Console) -> None:
    console.print(result_view(result), soft_wrap=False)
    sys.exit(result.code)


def _say(console: Console) -> app.Say:
    return lambda message: console.print(progress_line(message), soft_wrap=True)


def _call(coro: Any) -> app.Result:
    try:
        return app.run(coro)
    except ProxyError as exc:  # Caddy's words, escaped once, here
        click.echo(f"shadow-burnin: error: {escape.term(exc)}", err=True)
        sys.exit(exc.exit_code)


@click.command(epilog="\b\nExit status:\n" + EXIT_HELP)
@store_options
@caddy_options
@click.option("--force", is_flag=True, help="Cut over although the gates are not green "
              "(needs --reason; both logged).")
@click.option("--reason", help="Why (logged with --force).")
@click.option("--by", help="Who forces it [$USER].")
@click.option("--dry-run", is_flag=True, help="Show the change as a diff; change nothing.")
@click.option("--watch", "watch_s", help="Keep watching after the flip for this long (e.g. "
              "30m) and roll back by itself when v2 misbehaves [cutover.watch].")
def cutover(config_path: Path | None, log_path: Path | None, state_path: Path | None,
            caddy_url: str | None, route: str | None, caddyfile: Path | None, force: bool,
            reason: str | None, by: str | None, dry_run: bool, watch_s: str | None) -> None:
    """Flip Caddy's /v1/* route to v2 when every cutover gate is green.

    Judges the gates exactly as `gates` does (not green: prints them, changes nothing).
    Finds the route in Caddy's live config (admin API; Caddyfile- or JSON-started),
    checks it points at v1, saves that config beside the log
    (<log>.caddy-before-<time>.json), then in one change guarded against concurrent
    edits points /v1/* at v2 and adds /v1-legacy/* → v1 (reaching v1 as /v1/…).
    Verifies through the proxy which upstream answers each path (and a prompt the log
    shows they answer differently, when there is one); if that fails the saved config
    is restored and verified. Logs a `cutover` event and announces it ([cutover]
    webhook / on_cutover). With --watch, probes v2 through Caddy and follows a running
    burn-in's rounds and halt, and rolls back by itself past [cutover] limits.

    \b
    Example:
      shadow-burnin cutover --caddy http://127.0.0.1:2019 --dry-run
      shadow-burnin cutover --caddy http://127.0.0.1:2019 --watch 30m \\
          --caddyfile /etc/caddy/Caddyfile
      shadow-burnin cutover --force --reason "ppl gate waits on a re-run; CTO ok"
    """
    watch = None
    if watch_s is not None:
        try:
            watch = parse_duration(watch_s, "--watch")
        except ValueError as exc:
            raise ConfigError(None, str(exc)) from None
    cfg = _config(config_path, log_path, state_path, caddy_url, route)
    watch = watch if watch is not None else cfg.cutover.watch
    opts = app.Options(force=force, reason=reason, by=by, dry_run=dry_run, watch=watch,
                       caddyfile=caddyfile)
    console = out_console()
    result = _call(app.cutover(cfg, opts, _say(console)))
    if result.evidence is not None:
        console.print(gates_table(result.evidence.report))
    _finish(result, console)


@click.command(epilog="\b\nExit status:\n  0  rolled back (or already on v1)\n"
               "  2  bad input, or Caddy unreachable / refusing / not as expected: nothing "
               "changed\n  5  applied, but v1 could not be verified through the proxy")
@store_options
@caddy_options
@click.option("--reason", help="Why (logged).")
@click.option("--by", help="Who rolls back [$USER].")
def rollback(config_path: Path | None, log_path: Path | None, state_path: Path | None,
             caddy_url: str | None, route: str | None, caddyfile: Path | None,
             reason: str | None, by: str | None) -> None:
    """Point /v1/* back at v1 and remove /v1-legacy/*: no gates, no questions.

    Restores the whole config saved by the cutover only when Caddy's live config is still
    exactly the one the cutover wrote (digests compared); otherwise re-points just the
    route. Verified through the proxy, logged as a `rollback` event, announced.

    \b
    Example:
      shadow-burnin rollback --reason "v2 p99 doubled after the flip"
      shadow-burnin rollback --caddy http://127.0.0.1:2019 --caddyfile /etc/caddy/Caddyfile
    """
    cfg = _config(config_path, log_path, state_path, caddy_url, route)
    console = out_console()
    result = _call(app.rollback(cfg, reason=reason, by=by, say=_say(console),
                                caddyfile=caddyfile))
    _finish(result, console)


COMMANDS = [cutover, rollback]
