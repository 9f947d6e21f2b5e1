"""Everything the gates judge, read once: the log (rounds and events) and the latest
``ppl`` run. Used by ``gates`` and ``bench``; the judging itself is pure (``core``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shadow_burnin.config import Config
from shadow_burnin.core.drift import Drift, drift
from shadow_burnin.core.figures import drift_figures, halt_figures, log_figures, ppl_figures
from shadow_burnin.core.flip import FlipStatus, flip_status
from shadow_burnin.core.gates import GateReport, evaluate
from shadow_burnin.core.halt import HaltStatus, halt_status
from shadow_burnin.core.stats import Summary, summarise
from shadow_burnin.errors import LogError
from shadow_burnin.io.log.events import read_events
from shadow_burnin.io.log.logread import LogScan, Window, scan
from shadow_burnin.io.log.pplstore import latest_run


@dataclass
class Evidence:
    summary: Summary
    report: GateReport
    drift: Drift
    halt: HaltStatus
    ppl: dict[str, Any] | None
    scan: LogScan
    notes: list[str] = field(default_factory=list)
    flip: FlipStatus | None = None  # where the route points after cutover/rollback events


def judge(cfg: Config, summary: Summary, result: LogScan) -> Evidence:
    """Gates and drift for rounds already scanned and summarised."""
    cols = result.columns
    halt = halt_status(result.other)
    d = drift(cols.ts, cols.latency)
    ppl = latest_run(Path(cfg.ppl_log()))
    g = cfg.gates
    figures = log_figures(summary, cols, statistical=g.statistical,
                          rng=np.random.default_rng(g.seed), bootstrap=g.bootstrap)
    figures.update(halt_figures(halt))
    figures.update(ppl_figures(ppl))
    figures.update(drift_figures(d, summary.last_ts))
    notes = []
    if ppl is None:
        notes.append(f"no ppl run yet ({cfg.ppl_log()}): run `shadow-burnin ppl`")
    report = evaluate(g.specs, figures, statistical=g.statistical, rounds=summary.rounds,
                      as_of=summary.last_ts, notes=notes)
    inline = [r for r in result.other if r.get("kind") == "event"]
    flip = flip_status(read_events(Path(cfg.paths.log), inline))
    return Evidence(summary, report, d, halt, ppl, result, notes, flip)


def gather(cfg: Config, window: Window | None = None) -> Evidence:
    """Scan the log once and judge it (``window``: only rounds and events inside it)."""
    log = Path(cfg.paths.log)
    if not log.exists():
        raise LogError(log, "no such log file (run `shadow-burnin run` first, or pass --log)")
    result = scan(log, window)
    summary = summarise(result.columns)
    summary.notes.extend(result.notes)
    return judge(cfg, summary, result)
