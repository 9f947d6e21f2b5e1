"""``shadow-burnin demo``: a real burn-in on two local servers (orchestration: app/demo.py).

Default pair: v1 = llama.cpp's C++ server (xllamacpp wheel), v2 = mistral.rs (Rust,
mistralrs wheel) behind a small OpenAI-compatible front — the same Gemma 3 270M GGUF,
installed from wheels only. The model is a base model, so the demo uses
``/v1/completions``.
"""

from __future__ import annotations

import shlex
from datetime import UTC, datetime
from pathlib import Path

import click
from rich.console import Console

from shadow_burnin.app.burnin import execute
from shadow_burnin.app.demo import PAIRS, DemoOptions, divergence_line, run_demo
from shadow_burnin.app.demo import write_demo_prompts as write_demo_prompts
from shadow_burnin.cli.options import load_config, out_console
from shadow_burnin.cli.report import summary_of
from shadow_burnin.config import data_dir
from shadow_burnin.render.escape import term


@click.command()
@click.option("--pair", type=click.Choice(PAIRS), default="cpp-rust", show_default=True,
              help="cpp-rust: llama.cpp C++ (xllamacpp) vs mistral.rs (Rust), wheels only; "
                   "llama-cpp: llama-server vs llama-cpp-python (extra [llama-cpp], "
                   "compiles); llama-cpp-upgrade: llama-server from llama-cpp-python's "
                   "llama.cpp vs the newer one in xllamacpp (compiles llama-server once).")
@click.option("--rounds", type=click.IntRange(1), default=60, show_default=True,
              help="Rounds to run.")
@click.option("--interval", type=float, default=0.0, show_default=True,
              help="Seconds between round starts (0: back to back).")
@click.option("--max-tokens", type=click.IntRange(1), default=32, show_default=True,
              help="max_tokens per request.")
@click.option("--all-prompts", is_flag=True,
              help="Use the whole built-in corpus (long-context prompts take ~10 s each).")
@click.option("--forensics/--no-forensics", default=True, show_default=True,
              help="Token logprobs on every request, a verdict for every divergence "
                   "(near-tie or regression) and a re-fire of each non-exact round.")
@click.option("--keep-servers", is_flag=True,
              help="Leave both servers running and print ready-to-paste `run` commands.")
@click.option("--log", "log_path", type=click.Path(path_type=Path),
              help="Log for this demo (default: a new file under the data dir's demo/).")
def demo(pair: str, rounds: int, interval: float, max_tokens: int, all_prompts: bool,
         forensics: bool, keep_servers: bool, log_path: Path | None) -> None:
    """Burn-in on two real local LLM servers with a real model, end to end.

    Starts v1 and v2 on free loopback ports (same Gemma 3 270M weights), runs the burn-in
    with live progress and forensics, prints the bench summary, how many divergences were
    near-ties and how many regressions, and the log's path, and stops both servers (also
    on Ctrl-C or failure). Needs the [demo] extra: pip install 'shadow-burnin[demo]'.

    \b
    Example:
      shadow-burnin demo
      shadow-burnin demo --rounds 200 --keep-servers
      shadow-burnin demo --pair llama-cpp      # needs the [llama-cpp] extra
    """
    console = out_console()
    err = Console(stderr=True)
    base = data_dir() / "demo"
    base.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    log = log_path or base / f"demo-{stamp}.jsonl"

    def say(message: str) -> None:
        err.print(f"demo: {term(message)}", markup=False, highlight=False, soft_wrap=True)

    opts = DemoOptions(rounds=rounds, interval=interval, max_tokens=max_tokens,
                       all_prompts=all_prompts, forensics=forensics,
                       keep_servers=keep_servers, pair=pair)
    result = run_demo(opts, log, base,
                      load=lambda overrides, path: load_config(None, overrides, path),
                      burnin=lambda cfg: execute(cfg, new_run=True, console=console),
                      say=say)
    summary = summary_of(log)
    from shadow_burnin.render.summary import bench_table

    console.print(bench_table(summary))
    console.print(f"\nv1 = {result.labels[0]}, v2 = {result.labels[1]}", highlight=False)
    if forensics:
        console.print(f"Forensics: {divergence_line(summary.forensics)}", highlight=False)
    console.print(f"{result.outcome.rounds} rounds in {result.seconds:.0f} s "
                  f"({result.rounds_per_min:.1f} rounds/min); servers ready in "
                  f"{result.startup:.1f} s. Log: {term(str(log))}",
                  highlight=False, soft_wrap=True)
    console.print(f"Explore it: shadow-burnin recent --log {term(shlex.quote(str(log)))}",
                  highlight=False, soft_wrap=True)
    if keep_servers:
        v1, v2 = result.urls
        console.print("\nServers left running. Continue the burn-in with:", highlight=False)
        console.print(
            f"  shadow-burnin run --v1 {v1} --v2 {v2} --api completions"
            f" --max-tokens {max_tokens} --log {term(shlex.quote(str(log)))} --force",
            highlight=False, soft_wrap=True)
        pids = " ".join(str(p) for p in result.pids if p is not None)
        console.print(f"Stop them with: kill {pids}", highlight=False)


COMMANDS = [demo]
