"""``shadow-burnin run``: the burn-in loop."""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from shadow_burnin.cli.divergences import forensics_plan
from shadow_burnin.cli.gates import halt_watch
from shadow_burnin.cli.options import load_config, store_options
from shadow_burnin.config import Config, fingerprint
from shadow_burnin.core.mirror import replay_offsets
from shadow_burnin.core.prompt import Prompt, prompts_digest
from shadow_burnin.errors import ConfigError, SetupChangedError
from shadow_burnin.io.http.client import Endpoint, RequestSpec
from shadow_burnin.io.log.store import Store, archive
from shadow_burnin.io.run.forensics import forensic_steps
from shadow_burnin.io.run.runner import Runner, RunOutcome, RunPlan
from shadow_burnin.prompts import load_builtin, load_file
from shadow_burnin.render.progress import make_progress


def load_prompts(cfg: Config) -> list[Prompt]:
    return load_file(cfg.run.prompts) if cfg.run.prompts else load_builtin()


def api_key(env_name: str | None, side: str) -> str | None:
    if not env_name:
        return None
    value = os.environ.get(env_name)
    if not value:
        raise ConfigError(None, f"{side}.api_key_env: environment variable {env_name} is not set")
    return value


def plan_for(cfg: Config, setup: str, seed: int) -> RunPlan:
    spec = RequestSpec(api=cfg.request.api, max_tokens=cfg.request.max_tokens,  # type: ignore[arg-type]
                       stream=cfg.request.stream, timeout_s=cfg.request.timeout,
                       extra=dict(cfg.request.extra), max_reply_bytes=cfg.request.max_reply_bytes,
                       logprobs=cfg.request.logprobs or cfg.forensics.logprobs)
    return RunPlan(
        v1=Endpoint(cfg.v1.url, cfg.v1.model, api_key(cfg.v1.api_key_env, "v1"), cfg.run.insecure),
        v2=Endpoint(cfg.v2.url, cfg.v2.model, api_key(cfg.v2.api_key_env, "v2"), cfg.run.insecure),
        spec=spec, setup=setup, seed=seed, interval=cfg.run.interval, rounds=cfg.run.rounds,
        duration=cfg.run.duration, concurrent=cfg.run.concurrent,
        concurrency=cfg.run.concurrency,
    )


def open_store(cfg: Config, setup: str, *, new_run: bool, force: bool,
               warn: Console) -> Store:
    """Open (and repair) the log/state; refuse a different setup unless told."""
    log, state = Path(cfg.paths.log), Path(cfg.paths.state)
    store = Store(log, state)
    for message in store.open().warnings:
        warn.print(f"warning: {message}", markup=False, highlight=False)
    old = store.state.setup
    if store.state.last_round and old is not None and old != setup:
        if new_run:
            store.close()
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
            archive([log, state], stamp, lambda a, b: warn.print(
                f"archived {a} → {b}", markup=False, highlight=False))
            store = Store(log, state)
            store.open()
        elif not force:
            store.close()
            raise SetupChangedError(
                f"{state}: written by a different setup ({old}, now {setup}): URLs, models, "
                "API, request parameters or prompts changed; use --new-run to archive the "
                "old log and start fresh, or --force to continue this log"
            )
    return store


def execute(cfg: Config, *, new_run: bool = False, force: bool = False, quiet: bool = False,
            console: Console | None = None, replay_speed: float | None = None) -> RunOutcome:
    """Run a burn-in with this config (used by ``run`` and ``demo``); ``replay_speed``:
    play the prompts file once, in order, at its captured times (``--replay``)."""
    out = console or Console(soft_wrap=True)  # off a terminal: one line per message,
    err = Console(stderr=True, soft_wrap=True)  # never cut at 80 columns
    prompts = load_prompts(cfg)
    setup = fingerprint(cfg.fingerprint_fields(prompts_digest(prompts)))
    for side in ("v1", "v2"):  # a missing key variable is refused before any file is made
        api_key(getattr(cfg, side).api_key_env, side)
    store = open_store(cfg, setup, new_run=new_run, force=force, warn=err)
    try:
        if store.state.seed is None:
            store.state.seed = cfg.run.seed if cfg.run.seed is not None else \
                secrets.randbelow(2**31)
        store.state.setup = setup
        plan = plan_for(cfg, setup, store.state.seed)
        if replay_speed is not None:
            plan = replace(plan, replay=replay_offsets(prompts, replay_speed,
                                                       cfg.run.interval))

        def usr1() -> None:
            from shadow_burnin.cli.report import print_summary

            print_summary(Path(cfg.paths.log), err)

        progress = make_progress(out, quiet=quiet)
        fplan = forensics_plan(cfg, plan)

        def notice(message: str) -> None:
            if quiet:
                err.print(f"warning: {message}", markup=False, highlight=False)
            else:
                progress.warn(message)

        watch = halt_watch(cfg, store, notice, err)

        async def go() -> RunOutcome:
            async with forensic_steps(fplan, plan.spec, notice) as steps:
                runner = Runner(plan, prompts, store, progress, on_usr1=usr1, steps=steps,
                                observers=[watch] if watch else [])
                try:
                    return await runner.run()
                finally:
                    if watch is not None:
                        await watch.drain()  # halt alerts still in flight

        return asyncio.run(go())
    finally:
        store.close()


@click.command()
@store_options
@click.option("--v1", "v1_url", help="v1 (production) base URL [http://127.0.0.1:8080].")
@click.option("--v2", "v2_url", help="v2 (candidate) base URL [http://127.0.0.1:8180].")
@click.option("--v1-model", help="Model for v1 (default: first id at GET /v1/models).")
@click.option("--v2-model", help="Model for v2 (default: first id at GET /v1/models).")
@click.option("--model", help="Model name for both sides.")
@click.option("--v1-key-env", help="Name of the environment variable holding v1's API key.")
@click.option("--v2-key-env", help="Name of the environment variable holding v2's API key.")
@click.option("--api", type=click.Choice(["chat", "completions", "native"]),
              help="chat: /v1/chat/completions, completions: /v1/completions, native: "
                   "llama.cpp's /completion [chat].")
@click.option("--max-tokens", type=int, help="max_tokens per request [64].")
@click.option("--stream/--no-stream", default=None, help="Stream (measures TTFT) [stream].")
@click.option("--timeout", type=float, help="Per-request timeout in seconds [120].")
@click.option("--interval", type=float, help="Seconds between round starts [2.5].")
@click.option("--rounds", type=int, help="Stop after N rounds of this invocation.")
@click.option("--duration", help="Stop after this long (e.g. 72h, 30m).")
@click.option("--concurrent", is_flag=True, default=None,
              help="Send both requests of a round at once (default: one after the other, "
                   "alternating which side goes first).")
@click.option("--concurrency", type=int, help="Rounds in flight at once [1].")
@click.option("--seed", type=int, help="Prompt shuffle seed for a new run [random].")
@click.option("--prompts", "prompts_file", help="JSONL prompts file (replaces the built-in set).")
@click.option("--replay", "replay_file", help="Play this prompts file (e.g. a `mirror "
              "--capture`) once, in order, at its captured times, instead of cycling.")
@click.option("--speed", type=click.FloatRange(min=0.0, min_open=True),
              help="With --replay: time scale (2: twice as fast) [1].")
@click.option("--insecure", is_flag=True, default=None, help="Do not verify TLS for https.")
@click.option("--logprobs", "logprobs", type=click.IntRange(0, 20),
              help="Top-K logprobs per token for divergence verdicts; 0: off [5].")
@click.option("--refire", type=click.IntRange(0, 10),
              help="Re-send each non-exact round's prompt N times to both sides [1].")
@click.option("--aa-every", type=click.IntRange(0),
              help="Every Nth round, also send the prompt twice to v1 (A/A); 0: off [10].")
@click.option("--v1b", "v1b_url", help="A second copy of v1 for the A/A pairs (default: v1).")
@click.option("--calibrate", is_flag=True, default=None,
              help="Thresholds from the A/A noise floor: tau_tie = max(tau_tie, p99 of the "
                   "A/A swings and margin moves), tau_drift = max(tau_drift, p99 of the A/A "
                   "logprob drifts), each once 100 samples are in.")
@click.option("--new-run", is_flag=True, help="Archive the old log/state and start fresh.")
@click.option("--force", is_flag=True, help="Continue a log written by a different setup.")
@click.option("--quiet", is_flag=True, help="No progress output.")
def run(config_path: Path | None, log_path: Path | None, state_path: Path | None,
        v1_url: str | None, v2_url: str | None, v1_model: str | None, v2_model: str | None,
        model: str | None, v1_key_env: str | None, v2_key_env: str | None, api: str | None,
        max_tokens: int | None, stream: bool | None, timeout: float | None,
        interval: float | None, rounds: int | None, duration: str | None,
        concurrent: bool | None, concurrency: int | None, seed: int | None,
        prompts_file: str | None, replay_file: str | None, speed: float | None,
        insecure: bool | None, logprobs: int | None,
        refire: int | None, aa_every: int | None, v1b_url: str | None,
        calibrate: bool | None, new_run: bool, force: bool, quiet: bool) -> None:
    """Fire every prompt at v1 and v2, bucket the replies, log every round.

    Runs until --rounds/--duration or SIGINT/SIGTERM (the round in flight is finished and
    logged; a second signal abandons it). SIGUSR1 prints the summary to stderr.

    Forensics: every differing round gets a verdict from token logprobs (near-tie,
    regression, unexplained) and is re-sent (--refire) to tell flaky servers apart;
    every --aa-every-th prompt also goes twice to v1 ("kind": "aa" records, not rounds).
    See `shadow-burnin divergences`.

    \b
    Example:
      shadow-burnin run --v1 http://127.0.0.1:8080 --v2 http://127.0.0.1:8180 \\
          --api completions --rounds 500 --interval 1
    """
    overrides: dict[str, dict[str, Any]] = {
        "v1": {"url": v1_url, "model": v1_model or model, "api_key_env": v1_key_env},
        "v2": {"url": v2_url, "model": v2_model or model, "api_key_env": v2_key_env},
        "request": {"api": api, "max_tokens": max_tokens, "stream": stream, "timeout": timeout},
        "run": {"interval": interval, "rounds": rounds, "duration": duration,
                "concurrent": concurrent, "concurrency": concurrency, "seed": seed,
                "prompts": prompts_file, "insecure": insecure},
        "forensics": {"logprobs": logprobs, "refire": refire, "aa_every": aa_every,
                      "v1b": v1b_url, "calibrate": calibrate},
    }
    if replay_file is not None:
        if prompts_file is not None:
            raise ConfigError(None, "--replay: give the file to --replay only, not --prompts too")
        overrides["run"]["prompts"] = replay_file
    elif speed is not None:
        raise ConfigError(None, "--speed: only with --replay FILE")
    cfg = load_config(config_path, overrides, log_path, state_path)
    outcome = execute(cfg, new_run=new_run, force=force, quiet=quiet,
                      replay_speed=(speed or 1.0) if replay_file is not None else None)
    click.echo(f"{outcome.rounds} rounds logged to {cfg.paths.log} ({outcome.reason})",
               err=True)
    sys.exit(0)


COMMANDS = [run]
