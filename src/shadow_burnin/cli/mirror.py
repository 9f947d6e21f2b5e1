"""``shadow-burnin mirror``: serve real traffic from v1, shadow it to v2, log the rounds."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from shadow_burnin.app.mirror import Outlets, serve_mirror
from shadow_burnin.cli.options import load_config, store_options
from shadow_burnin.render.escape import term
from shadow_burnin.render.gates import halt_alert
from shadow_burnin.render.mirror import ready_line, summary_line


@click.command()
@store_options
@click.option("--listen", help="HOST:PORT to serve clients on [127.0.0.1:8090].")
@click.option("--v1", "v1_url", help="v1 (production, answers the clients) base URL.")
@click.option("--v2", "v2_url", help="v2 (the shadow) base URL.")
@click.option("--v1-key-env", help="Variable holding v1's key, only for the shadow-only "
              "greedy copies (clients' own Authorization goes to v1 untouched).")
@click.option("--v2-key-env", help="Name of the environment variable holding v2's API key.")
@click.option("--v2-model", help="Model name the shadow copy asks v2 for (default: the "
              "client's).")
@click.option("--max-queue", type=click.IntRange(1), help="Shadow copies waiting, at most; "
              "a full queue drops the copy (counted) [1000].")
@click.option("--shadow-concurrency", type=click.IntRange(1),
              help="Shadow requests in flight at once [4].")
@click.option("--sample", type=click.FloatRange(0.0, 1.0),
              help="Share of requests copied to the shadow [1.0].")
@click.option("--timeout", type=click.FloatRange(min=0.0, min_open=True),
              help="Per shadow request, seconds [120].")
@click.option("--max-body", type=click.IntRange(1), help="Requests larger than this many "
              "bytes go to v1 only, never compared [4194304].")
@click.option("--force-greedy-shadow", is_flag=True, default=None,
              help="For sampled requests (temperature > 0, n > 1) send v2 and a second, "
                   "shadow-only copy to v1 with temperature 0, and compare those two.")
@click.option("--trust-seed", is_flag=True, default=None,
              help="Count temperature > 0 with a seed as comparable (both servers honour "
                   "seeds).")
@click.option("--keep-text", is_flag=True, default=None,
              help="Log prompts and replies in full (default: SHA-256 and length, plus "
                   "±40 characters around the first divergence).")
@click.option("--capture", type=click.Path(path_type=Path, dir_okay=False),
              help="Append every request to this JSONL (0600; user data) for `run "
                   "--prompts`/`--replay`.")
@click.option("--grace", type=click.FloatRange(min=0.0),
              help="On SIGTERM: seconds to finish clients and drain the shadow queue [30].")
@click.option("--insecure", is_flag=True, default=None, help="Do not verify TLS for https.")
@click.option("--rotate", help="Close the log into numbered segments at this size (1GB) or "
              "daily, as `run --rotate` [run.rotate].")
@click.option("--single-process", is_flag=True,
              help="Run the shadow in this process too (half the memory; the shadow's "
                   "work then shares the clients' event loop).")
@click.option("--shadow-sched", type=click.Choice(["idle", "nice"]),
              help="The shadow process's CPU scheduling: idle = SCHED_IDLE (runs only when "
                   "the clients' process leaves the CPU free), nice = normal at "
                   "--shadow-nice [idle].")
@click.option("--shadow-nice", type=click.IntRange(0, 19),
              help="With --shadow-sched nice: how much nicer than the mirror the shadow "
                   "process runs, 0-19 [10].")
@click.option("--commit-every", type=click.FloatRange(0.0, 60.0),
              help="Seconds between two group commits of the log, at least (a crash loses "
                   "at most the last window's rounds) [1].")
@click.option("--quiet", is_flag=True, help="Only the ready line and the final summary.")
def mirror(config_path: Path | None, log_path: Path | None, state_path: Path | None,
           listen: str | None, v1_url: str | None, v2_url: str | None,
           v1_key_env: str | None, v2_key_env: str | None, v2_model: str | None,
           max_queue: int | None, shadow_concurrency: int | None, sample: float | None,
           timeout: float | None, max_body: int | None, force_greedy_shadow: bool | None,
           trust_seed: bool | None, keep_text: bool | None, capture: Path | None,
           grace: float | None, insecure: bool | None, rotate: str | None,
           shadow_sched: str | None, shadow_nice: int | None,
           commit_every: float | None, single_process: bool,
           quiet: bool) -> None:
    """A reverse proxy for real traffic: clients get v1's replies untouched, a copy of
    each request goes to v2 off their path, both replies are compared and logged as
    rounds with "source": "mirror" (bench, gates, divergences read them as usual).

    Paths compared: /v1/chat/completions, /v1/completions, /completion; every other
    request is proxied to v1 as is. Requests that are not greedy (temperature > 0
    without a trusted seed, n > 1, tools) are logged as not-comparable. SIGTERM: stop
    accepting, finish clients, drain the shadow queue within --grace, exit 0.

    \b
    Example:
      V2_KEY=... shadow-burnin mirror --listen 127.0.0.1:8090 \\
          --v1 http://127.0.0.1:8080 --v2 http://127.0.0.1:8180 --v2-key-env V2_KEY \\
          --sample 0.1 --capture traffic.jsonl
    """
    overrides: dict[str, dict[str, Any]] = {
        "v1": {"url": v1_url, "api_key_env": v1_key_env},
        "v2": {"url": v2_url, "api_key_env": v2_key_env, "model": v2_model},
        "run": {"insecure": insecure, "rotate": rotate},
        "mirror": {"listen": listen, "max_queue": max_queue,
                   "shadow_concurrency": shadow_concurrency, "sample": sample,
                   "timeout": timeout, "max_body": max_body,
                   "force_greedy_shadow": force_greedy_shadow, "trust_seed": trust_seed,
                   "keep_text": keep_text, "capture": str(capture) if capture else None,
                   "grace": grace, "shadow_sched": shadow_sched,
                   "shadow_nice": shadow_nice, "commit_every": commit_every},
    }
    cfg = load_config(config_path, overrides, log_path, state_path)
    err = Console(stderr=True, soft_wrap=True)

    def say(message: str) -> None:  # URLs, paths and errors come from outside
        err.print(term(message), markup=False, highlight=False)

    outlets = Outlets(
        notice=lambda m: say(f"warning: {m}"),
        alert=lambda m: err.print(halt_alert(m, cfg.paths.log), soft_wrap=False),
        ready=lambda url: say(ready_line(url, cfg.v1.url, cfg.v2.url, str(cfg.paths.log))),
        tick=None if quiet else (lambda f: say(summary_line(f))))
    figures = serve_mirror(cfg, outlets, single_process=single_process)
    say(summary_line(figures))
    sys.exit(0)


COMMANDS = [mirror]
