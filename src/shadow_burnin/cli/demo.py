"""``shadow-burnin demo``: a real burn-in on two local llama.cpp servers.

v1 is llama.cpp's C++ ``llama-server`` (built once from the sources vendored in
llama-cpp-python, cached), v2 is llama-cpp-python's server: the same Gemma 3 270M
weights through two different implementations. The model is a base model, so the demo
uses ``/v1/completions``.
"""

from __future__ import annotations

import shlex
import time
from datetime import UTC, datetime
from pathlib import Path

import click
from rich.console import Console

from shadow_burnin.cli.options import load_config, out_console
from shadow_burnin.cli.report import summary_of
from shadow_burnin.cli.run import execute
from shadow_burnin.config import data_dir

DEMO_CATEGORIES = ("factual", "completion", "arithmetic", "lists", "code-python", "code-c",
                   "code-bash", "code-sql", "definitions", "unit-conversion", "word-problems",
                   "translation", "poems", "stories")


def write_demo_prompts(path: Path) -> Path:
    """The built-in completion-style prompts of the demo categories, as a prompts file."""
    import orjson

    from shadow_burnin.core.prompt import prompt_to_dict
    from shadow_burnin.prompts import load_builtin

    chosen = [p for p in load_builtin() if p.category in DEMO_CATEGORIES and not p.is_chat]
    path.write_bytes(b"".join(orjson.dumps(prompt_to_dict(p)) + b"\n" for p in chosen))
    return path


@click.command()
@click.option("--rounds", type=click.IntRange(1), default=60, show_default=True,
              help="Rounds to run.")
@click.option("--interval", type=float, default=0.0, show_default=True,
              help="Seconds between round starts (0: back to back).")
@click.option("--max-tokens", type=click.IntRange(1), default=32, show_default=True,
              help="max_tokens per request.")
@click.option("--all-prompts", is_flag=True,
              help="Use the whole built-in corpus (long-context prompts take ~10 s each).")
@click.option("--forensics", is_flag=True,
              help="Also ask for token logprobs and re-fire divergent rounds (slow on "
                   "llama-cpp-python: ~7x per request).")
@click.option("--keep-servers", is_flag=True,
              help="Leave both servers running and print ready-to-paste `run` commands.")
@click.option("--log", "log_path", type=click.Path(path_type=Path),
              help="Log for this demo (default: a new file under the data dir's demo/).")
def demo(rounds: int, interval: float, max_tokens: int, all_prompts: bool, forensics: bool,
         keep_servers: bool, log_path: Path | None) -> None:
    """Burn-in on two real local llama.cpp servers with a real model, end to end.

    Starts v1 = llama.cpp's C++ llama-server and v2 = llama-cpp-python's server on free
    loopback ports (same Gemma 3 270M weights), runs the burn-in with live progress,
    prints the bench summary and the log's path, and stops both servers (also on
    Ctrl-C or failure). The first run builds llama-server (~8 min on 2 cores, cached).
    Needs the [demo] extra: pip install 'shadow-burnin[demo]'.

    \b
    Example:
      shadow-burnin demo
      shadow-burnin demo --rounds 200 --keep-servers
    """
    from shadow_burnin.io.servers.llama import DemoPair

    console = out_console()
    err = Console(stderr=True)
    base = data_dir() / "demo"
    base.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    log = log_path or base / f"demo-{stamp}.jsonl"
    prompts = write_demo_prompts(base / "demo-prompts.jsonl") if not all_prompts else None

    def say(message: str) -> None:
        err.print(f"demo: {message}", markup=False, highlight=False)

    t0 = time.monotonic()
    pair = DemoPair(base / "servers", progress=say)
    pair.v1.detached = pair.v2.detached = keep_servers
    try:
        say("starting v1 (C++ llama-server) and v2 (llama-cpp-python server)…")
        pair.start()
        say(f"v1 {pair.v1.url} (log {pair.v1.log_path})")
        say(f"v2 {pair.v2.url} (log {pair.v2.log_path})")
        say(f"both servers ready after {time.monotonic() - t0:.1f} s")
        overrides = {
            "v1": {"url": pair.v1.url}, "v2": {"url": pair.v2.url},
            # same sampling on both sides: llama-cpp-python defaults repeat_penalty to
            # 1.1, llama-server to 1.0; no prompt-cache reuse (it changes the numbers)
            "request": {"api": "completions", "max_tokens": max_tokens, "stream": True,
                        "timeout": 300.0,
                        "extra": {"cache_prompt": False, "repeat_penalty": 1.0}},
            "run": {"interval": interval, "rounds": rounds,
                    "prompts": str(prompts) if prompts else None, "seed": 1},
            # logprobs make llama-cpp-python ~7x slower, and re-fires double v2's load;
            # the A/A noise floor on v1 (C++, fast) stays on
            "forensics": {"logprobs": 0 if not forensics else 5,
                          "refire": 0 if not forensics else 1, "aa_every": 10},
        }
        cfg = load_config(None, overrides, log)
        started = time.monotonic()
        outcome = execute(cfg, new_run=True, console=console)
        minutes = (time.monotonic() - started) / 60
        summary = summary_of(log)
        from shadow_burnin.render.summary import bench_table

        console.print(bench_table(summary))
        rate = outcome.rounds / minutes if minutes else 0.0
        console.print(f"\n{outcome.rounds} rounds in {minutes * 60:.0f} s "
                      f"({rate:.1f} rounds/min). Log: {log}", highlight=False)
        console.print(f"Explore it: shadow-burnin recent --log {shlex.quote(str(log))}",
                      highlight=False, soft_wrap=True)
        if keep_servers:
            console.print("\nServers left running. Continue the burn-in with:", highlight=False)
            console.print(
                f"  shadow-burnin run --v1 {pair.v1.url} --v2 {pair.v2.url} --api completions"
                f" --max-tokens {max_tokens} --log {shlex.quote(str(log))} --force",
                highlight=False, soft_wrap=True)
            console.print(f"Stop them with: kill {pair.v1.pid} {pair.v2.pid}", highlight=False)
    finally:
        if not keep_servers:
            pair.stop()
            say("servers stopped")


COMMANDS = [demo]
