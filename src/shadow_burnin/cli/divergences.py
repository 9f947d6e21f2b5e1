"""``divergences``: one row per non-exact round, with its verdict (``app.divergences``)."""

from __future__ import annotations

from pathlib import Path

import click

from shadow_burnin.app.divergences import FILTERS
from shadow_burnin.app.logset import divergence_rows_set, shards_of
from shadow_burnin.cli.options import (
    bounded,
    first_log,
    load_config,
    logs_options,
    make_window,
    out_console,
    window_options,
)
from shadow_burnin.core import limits
from shadow_burnin.render.divergences import divergences_table
from shadow_burnin.render.escape import json_bytes


@click.command()
@logs_options
@window_options
@click.option("--verdict", type=click.Choice(FILTERS),
              help="Only rounds with this verdict (no-match) or cause (prefix-only).")
@click.option("--category", help="Only rounds of this prompt category.")
@click.option("--limit", type=bounded(limits.COUNT), help="Only the last N rows.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per row (JSON lines).")
def divergences(config_path: Path | None, log_specs: tuple[str, ...], state_path: Path | None,
                since: str | None, until: str | None, verdict: str | None,
                category: str | None, limit: int | None, as_json: bool) -> None:
    """One row per non-exact round: round, prompt, category, first differing token, verdict,
    swing, re-fire outcome, and both texts aligned at the first difference (±40
    characters, the differing character highlighted, invisible characters shown).

    Verdicts (no-match), relative to the noise model: near-tie (both tokens in each
    other's top-K, swing ≤ tau_tie 0.46 nats, prefix drift ≤ tau_drift 0.25),
    regression (a token outside the other's top-K, a pick that is not the side's own
    top-1, swing > tau_regress 0.92 nats or drift > 2·tau_drift), unexplained
    (otherwise, or no logprobs).
    Prefix-only rounds get a cause instead: length, stop or unexplained.

    \b
    Example:
      shadow-burnin divergences --verdict regression
      shadow-burnin divergences --since 2026-04-20T00:00:00Z --category code --json
      shadow-burnin divergences --log 'fleet/*/burnin.jsonl' --verdict regression
    """
    cfg = load_config(config_path, None, first_log(log_specs), state_path)
    rows = divergence_rows_set(shards_of(cfg, log_specs), make_window(since, until),
                               verdict=verdict, category=category, limit=limit)
    if as_json:
        for r in rows:
            click.echo(json_bytes(r).decode())
    elif not rows:
        click.echo("no non-exact rounds")
    else:
        out_console().print(divergences_table(rows))


COMMANDS = [divergences]
