"""``divergences``: one row per non-exact round, with its verdict; forensics wiring of run."""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Any

import click
import orjson

from shadow_burnin.cli.options import (
    load_config,
    make_window,
    out_console,
    store_options,
    window_options,
)
from shadow_burnin.config import Config
from shadow_burnin.core.aa import NoiseSamples, aa_samples
from shadow_burnin.core.verdict import Thresholds
from shadow_burnin.errors import LogError
from shadow_burnin.io.http.client import Endpoint
from shadow_burnin.io.log.logread import iter_records
from shadow_burnin.io.run.forensics import NON_EXACT, ForensicsPlan
from shadow_burnin.io.run.runner import RunPlan
from shadow_burnin.render.divergences import divergences_table, row

FILTERS = ("near-tie", "regression", "unexplained", "length", "stop")


def forensics_plan(cfg: Config, plan: RunPlan) -> ForensicsPlan:
    """The forensics of a run from ``[forensics]``; ``calibrate`` reads the log's A/A
    noise samples so far."""
    f = cfg.forensics
    v1b = None
    if f.v1b:
        v1b = Endpoint(f.v1b, plan.v1.model, plan.v1.api_key, plan.v1.insecure)
    noise = NoiseSamples()
    log = Path(cfg.paths.log)
    if f.calibrate and log.exists():
        noise = aa_samples(r for _n, _t, r in iter_records(log) if r.get("kind") == "aa")
    return ForensicsPlan(
        logprobs=plan.spec.logprobs, refire=f.refire, aa_every=f.aa_every, v1b=v1b,
        thresholds=Thresholds(f.tau_tie, f.tau_drift, f.tau_regress),
        calibrate=f.calibrate, aa_noise=noise, max_slowdown=f.max_slowdown,
    )


@click.command()
@store_options
@window_options
@click.option("--verdict", type=click.Choice(FILTERS),
              help="Only rounds with this verdict (no-match) or cause (prefix-only).")
@click.option("--category", help="Only rounds of this prompt category.")
@click.option("--limit", type=click.IntRange(1), help="Only the last N rows.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per row (JSON lines).")
def divergences(config_path: Path | None, log_path: Path | None, state_path: Path | None,
                since: str | None, until: str | None, verdict: str | None,
                category: str | None, limit: int | None, as_json: bool) -> None:
    """One row per non-exact round: round, prompt, category, first differing token, verdict,
    swing, re-fire outcome, and both texts aligned at the first difference (±40
    characters, the differing character highlighted, invisible characters shown).

    Verdicts (no-match): near-tie (both tokens in each other's top-K, swing ≤ tau_tie,
    prefix drift ≤ tau_drift), regression (a token outside the other's top-K, swing >
    0.5 nats or drift > 2·tau_drift), unexplained (otherwise, or no logprobs).
    Prefix-only rounds get a cause instead: length, stop or unexplained.

    \b
    Example:
      shadow-burnin divergences --verdict regression
      shadow-burnin divergences --since 2026-04-20T00:00:00Z --category code --json
    """
    cfg = load_config(config_path, None, log_path, state_path)
    log = Path(cfg.paths.log)
    if not log.exists():
        raise LogError(log, "no such log file (run `shadow-burnin run` first, or pass --log)")
    rows: deque[dict[str, Any]] = deque(maxlen=limit)
    for _n, _t, record in iter_records(log, make_window(since, until)):
        if record.get("kind", "round") != "round" or record.get("bucket") not in NON_EXACT:
            continue
        if category is not None and record.get("category") != category:
            continue
        r = row(record)
        if verdict is not None and r["verdict"] != verdict:
            continue
        rows.append(r)
    if as_json:
        for r in rows:
            click.echo(orjson.dumps(r).decode())
    elif not rows:
        click.echo("no non-exact rounds")
    else:
        out_console().print(divergences_table(list(rows)))


COMMANDS = [divergences]
