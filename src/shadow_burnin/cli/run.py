"""``shadow-burnin run``: flags → config → ``app.burnin.execute`` → one final line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from shadow_burnin.app.burnin import execute
from shadow_burnin.cli.options import bounded, default, load_config, seconds, store_options
from shadow_burnin.config import (
    DEFAULT_V1,
    DEFAULT_V2,
    ForensicsConfig,
    RequestConfig,
    RunConfig,
)
from shadow_burnin.core import limits
from shadow_burnin.errors import ConfigError
from shadow_burnin.render.escape import term
from shadow_burnin.render.text import plural

REQ, RUN, FX = RequestConfig(), RunConfig(), ForensicsConfig()  # help defaults read from these
__all__ = ["run"]


@click.command()
@store_options
@click.option("--v1", "v1_url", help=f"v1 (production) base URL {default(DEFAULT_V1)}.")
@click.option("--v2", "v2_url", help=f"v2 (candidate) base URL {default(DEFAULT_V2)}.")
@click.option("--v1-model", help="Model for v1 (default: first id at GET /v1/models).")
@click.option("--v2-model", help="Model for v2 (default: first id at GET /v1/models).")
@click.option("--model", help="Model name for both sides.")
@click.option("--v1-key-env", help="Name of the environment variable holding v1's API key.")
@click.option("--v2-key-env", help="Name of the environment variable holding v2's API key.")
@click.option("--api", type=click.Choice(["chat", "completions", "native"]),
              help="chat: /v1/chat/completions, completions: /v1/completions, native: "
                   f"llama.cpp's /completion {default(REQ.api)}.")
@click.option("--max-tokens", type=bounded(limits.MAX_TOKENS),
              help=f"max_tokens per request {default(REQ.max_tokens)}.")
@click.option("--stream/--no-stream", default=None,
              help=f"Stream (measures TTFT) {default('stream' if REQ.stream else 'no-stream')}.")
@click.option("--timeout", type=seconds(limits.TIMEOUT_S, zero_ok=False),
              help=f"Per-request timeout in seconds {default(REQ.timeout)}.")
@click.option("--interval", type=seconds(limits.INTERVAL_S, zero_ok=True),
              help=f"Seconds between round starts {default(RUN.interval)}.")
@click.option("--rounds", type=bounded(limits.ROUNDS),
              help="Stop after N rounds of this invocation.")
@click.option("--duration", help="Stop after this long (e.g. 72h, 30m).")
@click.option("--concurrent", is_flag=True, default=None,
              help="Send both requests of a round at once (default: one after the other, "
                   "alternating which side goes first).")
@click.option("--concurrency", type=bounded(limits.CONCURRENCY),
              help=f"Rounds in flight at once {default(RUN.concurrency)}.")
@click.option("--seed", type=bounded(limits.SEED),
              help="Prompt shuffle seed for a new run [random].")
@click.option("--prompts", "prompts_file", help="JSONL prompts file (replaces the built-in set).")
@click.option("--replay", "replay_file", help="Play this prompts file (e.g. a `mirror "
              "--capture`) once, in order, at its captured times, instead of cycling.")
@click.option("--speed", type=click.FloatRange(min=0.0, min_open=True),
              help="With --replay: time scale (2: twice as fast) [1].")
@click.option("--insecure", is_flag=True, default=None, help="Do not verify TLS for https.")
@click.option("--logprobs", "logprobs", type=bounded(limits.LOGPROBS),
              help="Top-K logprobs per token for divergence verdicts; 0: off "
                   f"{default(FX.logprobs)}.")
@click.option("--refire", type=bounded(limits.REFIRE),
              help="Re-send each non-exact round's prompt N times to both sides "
                   f"{default(FX.refire)}.")
@click.option("--aa-every", type=bounded(limits.AA_EVERY),
              help="Every Nth round, also send the prompt twice to v1 (A/A); 0: off "
                   f"{default(FX.aa_every)}.")
@click.option("--v1b", "v1b_url", help="A second copy of v1 for the A/A pairs (default: v1).")
@click.option("--calibrate", is_flag=True, default=None,
              help="Thresholds from the A/A noise floor: tau_tie = max(tau_tie, p99 of the "
                   "A/A swings and margin moves), tau_drift = max(tau_drift, p99 of the A/A "
                   "logprob drifts), each once 100 samples are in.")
@click.option("--rotate", help="Close the log into a numbered segment (x.jsonl.00001, …) when "
              "it would pass this size (1GB, 500MB) or at each new UTC day ('daily'); every "
              "command reads the segments as one log [run.rotate].")
@click.option("--new-run", is_flag=True, help="Archive the old log/state and start fresh.")
@click.option("--force", is_flag=True, help="Continue a log written by a different setup.")
@click.option("--quiet", is_flag=True, help="No progress output.")
@click.option("--metrics-port", type=click.IntRange(1, 65535),
              help="Serve Prometheus /metrics (figures from the log) on 127.0.0.1:PORT.")
@click.option("--stall", help="Liveness alert (through the halt's alert channel) when no "
              "round was committed for this long, e.g. 10m [alerts.stall].")
def run(config_path: Path | None, log_path: Path | None, state_path: Path | None,
        v1_url: str | None, v2_url: str | None, v1_model: str | None, v2_model: str | None,
        model: str | None, v1_key_env: str | None, v2_key_env: str | None, api: str | None,
        max_tokens: int | None, stream: bool | None, timeout: float | None,
        interval: float | None, rounds: int | None, duration: str | None,
        concurrent: bool | None, concurrency: int | None, seed: int | None,
        prompts_file: str | None, replay_file: str | None, speed: float | None,
        insecure: bool | None, logprobs: int | None,
        refire: int | None, aa_every: int | None, v1b_url: str | None,
        calibrate: bool | None, rotate: str | None, new_run: bool, force: bool,
        quiet: bool, metrics_port: int | None, stall: str | None) -> None:
    """Fire every prompt at v1 and v2, bucket the replies, log every round.

    Runs until --rounds/--duration or SIGINT/SIGTERM (the round in flight is finished and
    logged; a second signal abandons it). SIGUSR1 prints the summary to stderr.

    Forensics: every differing round gets a verdict from token logprobs (near-tie,
    regression, unexplained) and is re-sent (--refire) to tell flaky servers apart;
    every --aa-every-th prompt also goes twice to v1 (its result is stored inside the
    round's record, key "aa").
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
                "prompts": prompts_file, "insecure": insecure, "rotate": rotate},
        "forensics": {"logprobs": logprobs, "refire": refire, "aa_every": aa_every,
                      "v1b": v1b_url, "calibrate": calibrate},
        "alerts": {"stall": stall},
    }
    if replay_file is not None:
        if prompts_file is not None:
            raise ConfigError(None, "--replay: give the file to --replay only, not --prompts too")
        overrides["run"]["prompts"] = replay_file
    elif speed is not None:
        raise ConfigError(None, "--speed: only with --replay FILE")
    cfg = load_config(config_path, overrides, log_path, state_path)
    metrics = None
    if metrics_port is not None:
        from shadow_burnin.app.metrics import start_metrics_server

        metrics = start_metrics_server(cfg, metrics_port)
    try:
        outcome = execute(cfg, new_run=new_run, force=force, quiet=quiet,
                          replay_speed=(speed or 1.0) if replay_file is not None else None)
    finally:
        if metrics is not None:
            metrics.shutdown()
    # the one final line (the progress display's own last line says where it stopped)
    click.echo(f"{plural(outcome.rounds, 'round')} logged to {term(cfg.paths.log)} "
               f"({term(outcome.reason)})", err=True)


COMMANDS = [run]
