"""``shadow-burnin ppl``: perplexity and KL divergence of both servers on the same text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console

from shadow_burnin.app.ppl import run_for
from shadow_burnin.cli.options import (
    bounded,
    default,
    load_config,
    out_console,
    seconds,
    store_options,
)
from shadow_burnin.config_sections import PPL_METHODS, PplConfig
from shadow_burnin.core import limits
from shadow_burnin.render.escape import json_bytes, term
from shadow_burnin.render.gates import ppl_section

P = PplConfig()  # help defaults read from it


@click.command()
@store_options
@click.option("--v1", "v1_url", help="v1 base URL [http://127.0.0.1:8080].")
@click.option("--v2", "v2_url", help="v2 base URL [http://127.0.0.1:8180].")
@click.option("--text", "text_path", help="UTF-8 text to score [the built-in essay].")
@click.option("--window", type=bounded(limits.PPL_WINDOW),
              help=f"Window size in tokens {default(P.window)}.")
@click.option("--top-k", type=bounded(limits.PPL_TOP_K),
              help=f"Top-K log probabilities per position {default(P.top_k)}.")
@click.option("--max-windows", type=bounded(limits.PPL_MAX_WINDOWS),
              help="Score at most this many windows [all].")
@click.option("--v1-method", type=click.Choice(PPL_METHODS),
              help=f"How to score v1 {default(P.v1_method)}.")
@click.option("--v2-method", type=click.Choice(PPL_METHODS),
              help=f"How to score v2 {default(P.v2_method)}.")
@click.option("--timeout", type=seconds(limits.TIMEOUT_S, zero_ok=False),
              help=f"Per-request timeout in seconds {default(P.timeout)}.")
@click.option("--json", "as_json", is_flag=True, help="Print the run record as JSON.")
@click.option("--no-save", is_flag=True, help="Do not append the run to the ppl JSONL.")
def ppl(config_path: Path | None, log_path: Path | None, state_path: Path | None,
        v1_url: str | None, v2_url: str | None, text_path: str | None, window: int | None,
        top_k: int | None, max_windows: int | None, v1_method: str | None,
        v2_method: str | None, timeout: float | None, as_json: bool, no_save: bool) -> None:
    """Perplexity of v1 and v2 on the same text and tokens, and how far apart they are.

    Reports PPL per side, the paired mean-NLL difference (v2 − v1) with its standard
    error, mean KL(v1‖v2) over the union of both top-K sets plus a tail bucket, the
    same-top-1 rate and RMS Δp. The text is cut into non-overlapping windows (the first
    token of each is not scored). Each side is scored by OpenAI completions echo, by
    llama.cpp's /completion (one request per position), or by a custom /ppl endpoint,
    chosen automatically ([ppl] v1_method / v2_method). The run is appended to
    <log>.ppl.jsonl, where `gates` reads the latest.

    \b
    Example:
      shadow-burnin ppl --v1 http://127.0.0.1:8080 --v2 http://127.0.0.1:8180
      shadow-burnin ppl --window 256 --max-windows 2 --json
    """
    overrides: dict[str, dict[str, Any]] = {
        "v1": {"url": v1_url}, "v2": {"url": v2_url},
        "ppl": {"text": text_path, "window": window, "top_k": top_k,
                "max_windows": max_windows, "v1_method": v1_method, "v2_method": v2_method,
                "timeout": timeout},
    }
    cfg = load_config(config_path, overrides, log_path, state_path)
    err = Console(stderr=True)

    def say(message: str) -> None:  # already redacted by the app
        err.print(f"ppl: {term(message)}", markup=False, highlight=False)

    record, ppl_log = run_for(cfg, save=not no_save, say=say)
    if as_json:
        click.echo(json_bytes(record, indent=True).decode())
    else:
        out_console().print(ppl_section(record))
        if ppl_log is not None:
            click.echo(f"appended to {term(ppl_log)}")


COMMANDS = [ppl]
