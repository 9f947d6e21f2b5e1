"""``config`` and ``prompts``: what a run would use."""

from __future__ import annotations

from pathlib import Path

import click
import tomli_w

from shadow_burnin.cli.options import load_config, store_options
from shadow_burnin.prompts import categories, load_builtin, load_file
from shadow_burnin.render.escape import term


@click.command("config")
@store_options
def config_cmd(config_path: Path | None, log_path: Path | None, state_path: Path | None) -> None:
    """Print the effective configuration (file + defaults + flags) as TOML.

    \b
    Example:
      shadow-burnin config --config burnin.toml
    """
    cfg = load_config(config_path, None, log_path, state_path)
    # TOML escapes control characters in strings itself; term() is the terminal's guard
    click.echo(term(tomli_w.dumps(cfg.to_dict())), nl=False)


@click.command()
@click.option("--prompts", "prompts_file", type=click.Path(path_type=Path),
              help="A JSONL prompts file instead of the built-in corpus.")
def prompts(prompts_file: Path | None) -> None:
    """List the prompt categories and how many prompts each has.

    \b
    Example:
      shadow-burnin prompts
      shadow-burnin prompts --prompts my-prompts.jsonl
    """
    items = load_file(prompts_file) if prompts_file else load_builtin()
    cats = {term(name): n for name, n in categories(items).items()}
    width = max(len(c) for c in cats)
    for name, count in sorted(cats.items()):
        click.echo(f"{name:<{width}}  {count}")
    click.echo(f"{'total':<{width}}  {len(items)} prompts in {len(cats)} categories")


COMMANDS = [config_cmd, prompts]
