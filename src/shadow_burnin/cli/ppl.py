"""``shadow-burnin ppl``: perplexity and KL divergence of both servers on the same text."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click
import orjson
from rich.console import Console

from shadow_burnin.app.ppl import append_run, load_text, measure
from shadow_burnin.cli.options import load_config, out_console, store_options
from shadow_burnin.cli.run import api_key
from shadow_burnin.config_sections import PPL_METHODS
from shadow_burnin.io.ppl.scoring import PplError, PplSide
from shadow_burnin.io.run.haltwatch import now_iso
from shadow_burnin.render.gates import ppl_section


@click.command()
@store_options
@click.option("--v1", "v1_url", help="v1 base URL [http://127.0.0.1:8080].")
@click.option("--v2", "v2_url", help="v2 base URL [http://127.0.0.1:8180].")
@click.option("--text", "text_path", help="UTF-8 text to score [the built-in essay].")
@click.option("--window", type=int, help="Window size in tokens [1024].")
@click.option("--top-k", type=int, help="Top-K log probabilities per position [10].")
@click.option("--max-windows", type=int, help="Score at most this many windows [all].")
@click.option("--v1-method", type=click.Choice(PPL_METHODS), help="How to score v1 [auto].")
@click.option("--v2-method", type=click.Choice(PPL_METHODS), help="How to score v2 [auto].")
@click.option("--timeout", type=float, help="Per-request timeout in seconds [3600].")
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
    overrides = {
        "v1": {"url": v1_url}, "v2": {"url": v2_url},
        "ppl": {"text": text_path, "window": window, "top_k": top_k,
                "max_windows": max_windows, "v1_method": v1_method, "v2_method": v2_method,
                "timeout": timeout},
    }
    cfg = load_config(config_path, overrides, log_path, state_path)
    p = cfg.ppl
    text, info = load_text(p.text)
    sides = [PplSide(name, sc.url, getattr(p, f"{name}_method"), getattr(p, f"{name}_endpoint"),
                     sc.model, api_key(sc.api_key_env, name), cfg.run.insecure)
             for name, sc in (("v1", cfg.v1), ("v2", cfg.v2))]
    err = Console(stderr=True)

    def say(message: str) -> None:
        err.print(f"ppl: {message}", markup=False, highlight=False)

    try:
        measured = asyncio.run(measure(sides, text, info, window=p.window, top_k=p.top_k,
                                       max_windows=p.max_windows, timeout_s=p.timeout,
                                       ts=now_iso(), say=say))
    except PplError as exc:
        err.print(f"shadow-burnin: ppl failed: {exc}", markup=False, highlight=False)
        sys.exit(1)
    record = measured.record
    if not no_save:
        append_run(Path(cfg.ppl_log()), record)
    if as_json:
        click.echo(orjson.dumps(record, option=orjson.OPT_INDENT_2).decode())
    else:
        out_console().print(ppl_section(record))
        if not no_save:
            click.echo(f"appended to {cfg.ppl_log()}")


COMMANDS = [ppl]
