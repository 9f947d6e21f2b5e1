"""``import-legacy``: convert the earlier bash tool's log into a shadow-burnin log."""

from __future__ import annotations

from pathlib import Path

import click

from shadow_burnin.app.legacy import import_legacy as import_app
from shadow_burnin.cli.options import load_config, store_options
from shadow_burnin.render.escape import json_bytes, term
from shadow_burnin.render.legacy import report_lines


@click.command("import-legacy")
@store_options
@click.argument("source", metavar="LOG", type=click.Path(path_type=Path))
@click.option("--legacy-state", "legacy_state", type=click.Path(path_type=Path),
              help="The earlier tool's state file (KEY=VAL lines), compared with LOG.")
@click.option("--append", is_flag=True,
              help="Import into a log that already has rounds, numbering after its last.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def import_legacy(config_path: Path | None, log_path: Path | None, state_path: Path | None,
                  source: Path, legacy_state: Path | None, append: bool, as_json: bool) -> None:
    """Import the earlier bash tool's JSONL log (LOG) into the shadow-burnin log.

    Every pair is re-classified with shadow-burnin's byte-level definitions (the old tool
    called any shared first character "prefix-only"); the old verdict is kept under
    "legacy". Texts hold only the first line of each reply. Refuses a log that already
    has rounds unless --append. --state/--log name shadow-burnin's own files; the old
    tool's state file goes to --legacy-state.

    \b
    Example:
      shadow-burnin import-legacy old/shadow-burnin.jsonl \\
          --legacy-state old/shadow-burnin.state --log burnin.jsonl
      shadow-burnin bench --log burnin.jsonl
    """
    cfg = load_config(config_path, None, log_path, state_path)
    out = import_app(cfg, source, legacy_state, append=append,
                     warn=lambda m: click.echo(f"warning: {term(m)}", err=True))
    if as_json:
        click.echo(json_bytes(out, indent=True).decode())
    else:
        click.echo(term("\n".join(report_lines(out))))


COMMANDS = [import_legacy]
