"""``report --html``: the log (in a time window) → one self-contained HTML file; and
``gates --write CUTOVER.md [--report FILE]``: the cutover document, with the report
written beside it and linked from it (``cutover``)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from shadow_burnin.app.dashboard import Dashboard, Filters, dashboard_for, shard_cfg
from shadow_burnin.app.evidence import Evidence, run_level_verdict
from shadow_burnin.app.logset import gather_set, guard_set, shards_of, write_set
from shadow_burnin.config import Config
from shadow_burnin.core.columns import NOMATCH
from shadow_burnin.core.runverdict import token_evidence
from shadow_burnin.core.timefmt import iso_s as iso
from shadow_burnin.errors import ConfigError
from shadow_burnin.io.log.logread import Window
from shadow_burnin.io.log.logset import Shard
from shadow_burnin.io.log.sidecars import LogFiles, guard_output, write_output
from shadow_burnin.render.cutover import cutover_markdown
from shadow_burnin.render.cutover_report import report_section
from shadow_burnin.render.flip import flip_markdown
from shadow_burnin.render.html_report import report

CUTOVER_KIND = "cutover"  # the marker of a CUTOVER.md that ``gates --write`` wrote
REPORT_KIND = "report"


class Written(msgspec.Struct, frozen=True):
    path: Path
    bytes: int
    rounds: int
    divergences: int


def _log_files(cfg: Config) -> LogFiles:
    return LogFiles(Path(cfg.paths.log), state=Path(cfg.paths.state) if cfg.paths.state
                    else None, ppl=Path(cfg.ppl_log()))


def build(cfg: Config, window: Window | None = None, first: int = 20, listed: int = 500,
          now: datetime | None = None, shards: Sequence[Shard] | None = None
          ) -> tuple[str, int, int]:
    """The report's HTML, its rounds and its divergences (no file written); ``shards``:
    several logs pooled, with a per-shard table (default: the config's log)."""
    text, ov, total = _build(cfg, window, first, listed, now, shards)
    return text, ov["rounds"], total


def _build(cfg: Config, window: Window | None, first: int, listed: int = 500,
           now: datetime | None = None, shards: Sequence[Shard] | None = None
           ) -> tuple[str, dict[str, Any], int]:
    view = dashboard_for(cfg, shards, window) if shards else Dashboard(cfg, window)
    ov = {**view.overview(), "run_verdict": run_verdict_of(cfg, view, window)}
    divs = view.divergences(Filters(limit=listed))
    w = window or Window()
    span = (f"rounds from {iso(w.since) or 'the start'} until {iso(w.until) or 'the end'}")
    generated = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    text = report(ov, view.series(), divs, view.first_divergences(first),
                  generated=generated, window=span)
    return text, ov, divs["total"]


def run_verdict_of(cfg: Config, view: Dashboard, window: Window | None) -> dict[str, Any]:
    """The run-level verdict for the report (``app.evidence``: token statistics from the
    columns, the no-match rounds' forensics from one more pass over the log)."""
    cols = view.snapshot().columns
    no_match = int(np.count_nonzero(cols.bucket == NOMATCH))
    return run_level_verdict(view.logs(), window, no_match, view.overview().get("aa"),
                             token_evidence(cols.tokstats)).to_json()


def write(cfg: Config, target: Path, window: Window | None = None, first: int = 20,
          shards: Sequence[Shard] | None = None) -> Written:
    """Guard the target first (never the log or a side file of any shard, never a file
    we did not write), then build and write it atomically with the report marker.
    ``shards``: several logs, pooled with a per-shard table (one: as the config's log)."""
    if shards is not None and len(shards) == 1:  # a glob that matched one log
        cfg, shards = shard_cfg(cfg, shards[0].path), None
    if shards is not None and len(shards) > 1:
        guard_set(cfg, shards, target, kind=REPORT_KIND, medium="html")
        text, rounds, divs = build(cfg, window, first, shards=shards)
        write_set(cfg, shards, target, text, kind=REPORT_KIND, medium="html")
        return Written(target, target.stat().st_size, rounds, divs)
    files = _log_files(cfg)
    guard_output(target, [files], kind="report", medium="html")
    text, rounds, divs = build(cfg, window, first)
    write_output(target, text, [files], kind="report", medium="html")
    return Written(target, target.stat().st_size, rounds, divs)


class CutoverWritten(msgspec.Struct, frozen=True):
    """What ``gates --write`` wrote: the document and, if asked, the report beside it."""

    evidence: Evidence
    document: Path | None = None
    report: Written | None = None


def cutover(cfg: Config, window: Window | None = None, document: Path | None = None,
            report_path: Path | None = None, first: int = 20,
            shards: Sequence[Shard] | None = None) -> CutoverWritten:
    """``gates``: judge the log; with ``document`` write CUTOVER.md, and with
    ``report_path`` also the HTML report of the same rounds, linked from the document
    (relative link, size, SHA-256 and the report's headline figures). Several shards:
    the report pools them, with its per-shard table (as ``report --html``).

    Both outputs are refused (ConfigError) before the scan: a side file of the log, an
    input, an existing file this tool did not write, or the same path twice. The report
    is written first, so the document never links to a file that is not there."""
    shards = list(shards) if shards is not None else shards_of(cfg)
    if report_path is not None and document is None:
        raise ConfigError(report_path, "--report needs --write (the document that links it)")
    if document is not None:
        guard_set(cfg, shards, document, kind=CUTOVER_KIND, medium="markdown")
    if report_path is not None and document is not None:
        if _same(report_path, document):
            raise ConfigError(report_path, "the report and the cutover document must differ")
        guard_set(cfg, shards, report_path, kind=REPORT_KIND, medium="html")
    ev = gather_set(cfg, shards, window).evidence
    if document is None:
        return CutoverWritten(ev)
    where = cfg.paths.log if len(shards) == 1 else ", ".join(str(s.path) for s in shards)
    text = cutover_markdown(ev.report, ev.summary, ev.drift, ev.halt, ev.ppl,
                            log=where) + flip_markdown(ev.flip)
    written = None
    if report_path is not None:
        html, ov, total = _build(cfg, window, first, shards=shards)  # several: pooled
        write_set(cfg, shards, report_path, html, kind=REPORT_KIND, medium="html")
        data = report_path.read_bytes()
        written = Written(report_path, len(data), ov["rounds"], total)
        rv = ov.get("run_verdict") if ov.get("parity_rounds") else None
        relative = Path(os.path.relpath(os.path.abspath(report_path),
                                        os.path.abspath(document.parent))).as_posix()
        text += "\n" + report_section(relative, report_path.name, len(data),
                                      hashlib.sha256(data).hexdigest(), ov, rv)
    write_set(cfg, shards, document, text, kind=CUTOVER_KIND, medium="markdown")
    return CutoverWritten(ev, document, written)


def _same(a: Path, b: Path) -> bool:
    return os.path.abspath(a) == os.path.abspath(b) or (
        a.exists() and b.exists() and os.path.samefile(a, b))
