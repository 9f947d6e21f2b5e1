"""Everything the gates judge, read once: the log (rounds and events) and the latest
``ppl`` run. Used by ``gates``, ``bench``, the demo, the dashboard and reports; the
judging itself is pure (``core``)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

import msgspec
import numpy as np

from shadow_burnin.app.files import require_log
from shadow_burnin.config import Config
from shadow_burnin.core.aa import summarise_aa
from shadow_burnin.core.breakdown import forensics_summary
from shadow_burnin.core.drift import Drift, drift
from shadow_burnin.core.figures import drift_figures, halt_figures, log_figures, ppl_figures
from shadow_burnin.core.flip import FlipStatus, flip_status
from shadow_burnin.core.gates import GateReport, evaluate
from shadow_burnin.core.halt import HaltStatus, halt_status
from shadow_burnin.core.runverdict import (
    DEFAULT_PRIOR,
    RUN_METRICS,
    RunVerdict,
    TokenEvidence,
    flip_of,
    run_figures,
    run_verdict,
    run_verdict_arrays,
    token_evidence,
    widen,
)
from shadow_burnin.core.sidetables import summarise_aa_table
from shadow_burnin.core.stats import Summary, summarise
from shadow_burnin.io.log.logread import LogScan, Window
from shadow_burnin.io.log.logset import iter_segment_rounds, scan_segments
from shadow_burnin.io.log.pplstore import latest_run

T = TypeVar("T")


class Evidence(msgspec.Struct):
    summary: Summary
    report: GateReport
    drift: Drift
    halt: HaltStatus
    ppl: dict[str, Any] | None
    scan: LogScan
    notes: list[str] = msgspec.field(default_factory=list)
    flip: FlipStatus | None = None  # where the route points after cutover/rollback events


def events_of(result: LogScan) -> list[dict[str, Any]]:
    """The log's events in time order, as the scan collected them: inline ones (older
    logs) and ``<log>.events.jsonl``, filtered by the same window as the rounds."""
    return [r for r in result.other if r.get("kind") == "event"]


# above this many rounds the figures run one after the other: two at once hold both
# one's transient copies (10 M rounds: peak RSS 1 033 MB with the second thread, 818 MB
# without; the target is 1 GB)
PARALLEL_MAX_ROWS = 4_000_000


def spare_core() -> bool:
    """True when another core is idle right now: fewer tasks runnable than cores, this
    one included (``/proc/loadavg``'s fourth field; elsewhere the 1-minute load
    average). Then drift is computed beside the summary; on a busy machine a second
    thread only adds GIL hand-overs (measured: ~10 % more CPU, no shorter wall time at
    load 3 on 2 cores)."""
    cores = os.cpu_count() or 1
    if cores < 2:
        return False
    try:
        with open("/proc/loadavg", "rb") as fh:
            return int(fh.read().split()[3].split(b"/")[0]) < cores
    except (OSError, IndexError, ValueError):
        pass
    try:
        return os.getloadavg()[0] < cores - 1
    except OSError:
        return False


class Background(Generic[T]):
    """``fn(*args)`` on a thread of its own when ``spare_core()`` (and the figures are of
    at most ``PARALLEL_MAX_ROWS`` rounds), else right away (drift beside ``bench``'s
    summary: about as long as the percentiles and the forensics together);
    ``result()`` waits and returns it (or raises its error). The figures are numpy
    reductions that release the GIL, so two of them run on two cores; each one's result
    is the same as computed alone."""

    def __init__(self, fn: Callable[..., T], *args: Any, rows: int = 0) -> None:
        self._fn, self._args = fn, args
        self._value: T | None = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if rows <= PARALLEL_MAX_ROWS and spare_core():
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        else:
            self._run()

    def _run(self) -> None:
        try:
            self._value = self._fn(*self._args)
        except BaseException as exc:  # re-raised in the caller's thread by result()
            self._error = exc

    def result(self) -> T:
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]


def judge(cfg: Config, summary: Summary, result: LogScan,
          window: Window | None = None, *, logs: Sequence[Path] | None = None,
          halt: HaltStatus | None = None, drifted: Background[Drift] | None = None
          ) -> Evidence:
    """Gates and drift for rounds already scanned and summarised (``logs``: the files
    the rounds came from, default the config's log; ``halt``: the halt status when the
    caller folded it already, e.g. over several shards; ``drifted``: the drift of these
    rounds being computed on another thread)."""
    cols = result.columns
    events = events_of(result)
    if halt is None:
        halt = halt_status(events)
    d = drifted.result() if drifted is not None else drift(cols.ts, cols.latency)
    ppl = latest_run(Path(cfg.ppl_log()))
    g = cfg.gates
    # the bootstrap's generator only when the statistical gates use it (numpy.random is
    # 5 ms of imports a plain `bench` does not need)
    figures = log_figures(summary, cols, statistical=g.statistical,
                          rng=np.random.default_rng(g.seed) if g.statistical else None,
                          bootstrap=g.bootstrap)
    figures.update(halt_figures(halt))
    figures.update(ppl_figures(ppl))
    figures.update(drift_figures(d, summary.last_ts))
    if any(spec.metric in RUN_METRICS and spec.enabled for spec in g.specs):
        rv = (summary.forensics or {}).get("run_verdict")
        if rv is None and summary.parity_rounds:  # gates' own scan: one more pass
            rv = run_level_verdict(logs or [Path(cfg.paths.log)], window,
                                   summary.counts["no-match"], summary.aa,
                                   token_evidence(cols.tokstats),
                                   (ppl or {}).get("paired"), result).to_json()
        figures.update(run_figures(rv))
    notes = []
    if ppl is None:
        notes.append(f"no ppl run yet ({cfg.ppl_log()}): run `shadow-burnin ppl`")
    report = evaluate(g.specs, figures, statistical=g.statistical, rounds=summary.rounds,
                      as_of=summary.last_ts, notes=notes)
    flip = flip_status(events)
    return Evidence(summary, report, d, halt, ppl, result, notes, flip)


def gather(cfg: Config, window: Window | None = None) -> Evidence:
    """Scan the log once and judge it (``window``: only rounds and events inside it)."""
    log = require_log(cfg.paths.log)
    result = scan_segments(log, window)
    summary = summarise(result.columns)
    summary.notes.extend(result.notes)
    return judge(cfg, summary, result, window)


def scan_summary(log: Path, window: Window | None = None) -> tuple[Summary, LogScan]:
    """``bench``'s summary (with forensics and A/A) and the scan it came from (one pass)."""
    result = scan_segments(require_log(log), window)
    return bench_summary(result, [log], window), result


def bench_summary(result: LogScan, logs: Sequence[Path], window: Window | None = None
                  ) -> Summary:
    """``bench``'s summary of rounds already scanned from ``logs`` (their no-match
    rounds are read again for the run-level verdict)."""
    summary = summarise(result.columns)
    summary.notes.extend(result.notes)
    summary.forensics = forensics_summary(result.columns)
    summary.aa = aa_summary(result, summary.counts["exact"], summary.parity_rounds)
    if summary.parity_rounds:
        summary.forensics["run_verdict"] = run_level_verdict(
            logs, window, summary.counts["no-match"], summary.aa,
            token_evidence(result.columns.tokstats), result=result).to_json()
    return summary


def aa_summary(result: LogScan, ab_exact: int, ab_parity: int) -> dict[str, Any]:
    """The A/A floor: from the index's A/A table when the scan has one, else from the
    A/A records (the same figures)."""
    if result.aa is not None:
        return summarise_aa_table(result.aa, ab_exact, ab_parity).to_json()
    return summarise_aa(result.other, ab_exact, ab_parity).to_json()


def run_level_verdict(log: Path | Sequence[Path], window: Window | None, no_match: int,
                      aa: dict[str, Any] | None = None,
                      tokens: TokenEvidence | None = None,
                      ppl: dict[str, Any] | None = None,
                      result: LogScan | None = None) -> RunVerdict:
    """Noise or a changed distribution, from the rounds' token statistics (``tokens``,
    from the columns) and the no-match rounds' forensics (the scan's flip table when
    the round index kept it, else a second pass over the log(s)) against the default
    noise prior, widened by the A/A's p99 swing and drift when the log has an A/A."""
    prior = widen(DEFAULT_PRIOR, (aa or {}).get("swing_p99"), (aa or {}).get("drift_p99"))
    if not no_match:
        return run_verdict([], prior, no_match=0, tokens=tokens, ppl=ppl)
    if result is not None and result.flips is not None:  # the index keeps them
        t = result.flips
        return run_verdict_arrays(t.swing, t.drift, t.swing_min, t.in_topk, t.off_top1,
                                  t.reproducible, prior, no_match=no_match, tokens=tokens,
                                  ppl=ppl)
    logs = [log] if isinstance(log, Path) else list(log)
    flips = (flip_of(r.get("forensics"), r.get("refire"))
             for one in logs for _, _, r in iter_segment_rounds(one, window)
             if r.get("bucket") == "no-match")
    return run_verdict(flips, prior, no_match=no_match, tokens=tokens, ppl=ppl)


def summary_of(log: Path, window: Window | None = None) -> Summary:
    return scan_summary(log, window)[0]
