"""``report --html``: the log (in a time window) → one self-contained HTML file."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from shadow_burnin.app.dashboard import Dashboard, Filters
from shadow_burnin.app.evidence import run_level_verdict
from shadow_burnin.config import Config
from shadow_burnin.core.columns import NOMATCH
from shadow_burnin.core.runverdict import token_evidence
from shadow_burnin.core.timefmt import iso_s as iso
from shadow_burnin.io.log.logread import Window
from shadow_burnin.io.log.sidecars import LogFiles, guard_output, write_output
from shadow_burnin.render.html_report import report


@dataclass(frozen=True)
class Written:
    path: Path
    bytes: int
    rounds: int
    divergences: int


def _log_files(cfg: Config) -> LogFiles:
    return LogFiles(Path(cfg.paths.log), state=Path(cfg.paths.state) if cfg.paths.state
                    else None, ppl=Path(cfg.ppl_log()))


def build(cfg: Config, window: Window | None = None, first: int = 20, listed: int = 500,
          now: datetime | None = None) -> tuple[str, int, int]:
    """The report's HTML, its rounds and its divergences (no file written)."""
    view = Dashboard(cfg, window)
    ov = {**view.overview(), "run_verdict": run_verdict_of(cfg, view, window)}
    divs = view.divergences(Filters(limit=listed))
    w = window or Window()
    span = (f"rounds from {iso(w.since) or 'the start'} until {iso(w.until) or 'the end'}")
    generated = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    text = report(ov, view.series(), divs, view.first_divergences(first),
                  generated=generated, window=span)
    return text, ov["rounds"], divs["total"]


def run_verdict_of(cfg: Config, view: Dashboard, window: Window | None) -> dict[str, Any]:
    """The run-level verdict for the report (``app.evidence``: token statistics from the
    columns, the no-match rounds' forensics from one more pass over the log)."""
    cols = view.snapshot().columns
    no_match = int(np.count_nonzero(cols.bucket == NOMATCH))
    return run_level_verdict(Path(cfg.paths.log), window, no_match, view.overview().get("aa"),
                             token_evidence(cols.tokstats)).to_json()


def write(cfg: Config, target: Path, window: Window | None = None, first: int = 20) -> Written:
    """Guard the target first (never the log or a side file, never a file we did not
    write), then build and write it atomically with the report marker."""
    files = _log_files(cfg)
    guard_output(target, [files], kind="report", medium="html")
    text, rounds, divs = build(cfg, window, first)
    write_output(target, text, [files], kind="report", medium="html")
    return Written(target, target.stat().st_size, rounds, divs)
