"""``shadow-burnin preflight``: is a byte-for-byte burn-in of this pair meaningful?"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from shadow_burnin.app.preflight import APIS, preflight_for
from shadow_burnin.cli.options import bounded, load_config, out_console, store_options
from shadow_burnin.render.escape import json_bytes
from shadow_burnin.render.preflight import preflight_view


@click.command()
@store_options
@click.option("--v1", "v1_url", help="v1 base URL [http://127.0.0.1:8080].")
@click.option("--v2", "v2_url", help="v2 base URL [http://127.0.0.1:8180].")
@click.option("--api", type=click.Choice(APIS), help="Request API for the A/A [request.api].")
@click.option("--prompts", "prompts_file", help="A JSONL prompts file [the built-in corpus].")
@click.option("--sample", type=bounded((1, 1000)), default=16, show_default=True,
              help="Prompts tokenised on both sides (the longest 3 are always added).")
@click.option("--max-tokens", type=bounded((1, 1_000_000)),
              help="The run's max_tokens, for the context check [request.max_tokens].")
@click.option("--aa-tokens", type=bounded((1, 256)), default=16, show_default=True,
              help="max_tokens of the A/A requests (the same prompt twice per side).")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def preflight(config_path: Path | None, log_path: Path | None, state_path: Path | None,
              v1_url: str | None, v2_url: str | None, api: str | None,
              prompts_file: str | None, sample: int, max_tokens: int | None,
              aa_tokens: int, as_json: bool) -> None:
    """Check before a long burn-in that comparing v1 and v2 byte for byte makes sense.

    Compares what both servers expose: the model (/v1/models, llama.cpp /props), the
    tokenisation of a sample of the prompts (/tokenize), the sampler defaults that change
    greedy replies (repeat_penalty …), each side's determinism (the same prompt twice) and
    the context length against the longest prompt. Each mismatch names the setting to
    change. Exit status: 0 fine, 1 a mismatch that makes byte comparison meaningless,
    2 bad input.

    \b
    Example:
      shadow-burnin preflight --v1 http://127.0.0.1:8080 --v2 http://127.0.0.1:8180
    """
    overrides: dict[str, dict[str, Any]] = {
        "v1": {"url": v1_url}, "v2": {"url": v2_url},
        "request": {"api": api, "max_tokens": max_tokens},
        "run": {"prompts": prompts_file},
    }
    cfg = load_config(config_path, overrides, log_path, state_path)
    result = preflight_for(cfg, max_tokens=aa_tokens, sample=sample)
    if as_json:
        click.echo(json_bytes(result.to_json(), indent=True).decode())
    else:
        out_console().print(preflight_view(result))
    sys.exit(0 if result.ok else 1)


COMMANDS = [preflight]
