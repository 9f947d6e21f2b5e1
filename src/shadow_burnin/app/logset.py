"""Evidence from several logs at once (a fleet: one shard per pair or per host).

``--log`` may name several logs or a glob (``io.log.logset.resolve``). Each shard is
scanned once through its own index (and across its rotated segments); the totals pool
every shard's rounds, ``bench --by shard`` shows one summary per shard, and the gates are
judged on the pooled rounds or on each shard (``[gates] scope``; ``shard``: every shard
must pass, each shard's gates named in the table). One log is the same as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
from msgspec.structs import replace

from shadow_burnin.app.evidence import Background, Evidence, bench_summary, events_of, judge
from shadow_burnin.app.files import inputs_of
from shadow_burnin.config import Config
from shadow_burnin.core.drift import drift
from shadow_burnin.core.gates import shard_report
from shadow_burnin.core.halt import HaltStatus, halt_status
from shadow_burnin.core.stats import Summary, summarise
from shadow_burnin.io.log.logread import LogScan, Window
from shadow_burnin.io.log.logset import Shard, combine_scans, resolve, scan_segments
from shadow_burnin.io.log.logset import is_glob as is_glob  # for cli.options
from shadow_burnin.io.log.sidecars import LogFiles, guard_output, write_output


class FleetEvidence(msgspec.Struct):
    """The pooled evidence (its report judged per ``scope``) and the shards behind it."""

    evidence: Evidence
    shards: list[Shard]
    scope: str
    by_shard: dict[str, Summary] = msgspec.field(default_factory=dict)

    @property
    def summary(self) -> Summary:
        return self.evidence.summary


def shards_of(cfg: Config, specs: Sequence[str | Path] = ()) -> list[Shard]:
    """The shards a command reads: the ``--log`` values (files and globs), or the
    config's one log."""
    return resolve(list(specs) or [cfg.paths.log])


def family(cfg: Config, shards: Sequence[Shard]) -> list[LogFiles]:
    """Every shard's family of files (log, segments, side files): no output goes there."""
    out = [LogFiles(Path(cfg.paths.log), Path(cfg.paths.state), Path(cfg.ppl_log()))]
    for s in shards:
        c = _shard_cfg(cfg, s)
        out.append(LogFiles(s.path, None, Path(c.ppl_log())))
    return out


def guard_set(cfg: Config, shards: Sequence[Shard], target: Path, *, kind: str,
              medium: str) -> None:
    """Refuse an output path that belongs to any shard or is an input (before the scan)."""
    guard_output(target, family(cfg, shards), kind=kind, medium=medium, inputs=inputs_of(cfg))


def write_set(cfg: Config, shards: Sequence[Shard], target: Path, text: str, *, kind: str,
              medium: str) -> None:
    """Write an output file guarded against every shard: marked, atomic."""
    write_output(target, text, family(cfg, shards), kind=kind, medium=medium,
                 inputs=inputs_of(cfg))


def _shard_cfg(cfg: Config, shard: Shard) -> Config:
    """The config with this shard as its log (its ppl runs beside it, unless the config
    names one ppl file for all)."""
    return replace(cfg, paths=replace(cfg.paths, log=str(shard.path)))


def _pooled_halt(scans: Sequence[LogScan], shards: Sequence[Shard]) -> HaltStatus:
    """A halt active in any shard is active for the fleet (each shard's halts and
    acknowledgements are folded on their own: an ack in one shard forgives only its
    own halt)."""
    statuses = [halt_status(events_of(s)) for s in scans]
    active = [st for st in statuses if st.active]
    pick = active[0] if active else next((st for st in statuses if st.halt), None)
    base = pick or HaltStatus()
    return replace(base, active=bool(active), halts=sum(st.halts for st in statuses),
                   acks=sum(st.acks for st in statuses))


def gather_set(cfg: Config, shards: Sequence[Shard], window: Window | None = None, *,
               bench: bool = False, by_shard: bool = False,
               scope: str | None = None) -> FleetEvidence:
    """Scan every shard once and judge: pooled totals; per-shard summaries when
    ``by_shard``; gates over the pooled rounds or per shard (``scope``, default
    ``[gates] scope``). ``bench``: the summary carries forensics and the A/A."""
    scope = scope or cfg.gates.scope
    shards = list(shards)
    scans = [scan_segments(s.path, window) for s in shards]
    if len(shards) == 1:
        cfg1 = _shard_cfg(cfg, shards[0])
        cols = scans[0].columns
        drifted = Background(drift, cols.ts, cols.latency, rows=len(cols))  # other core
        summary = _summary(scans[0], [shards[0].path], window, bench)
        ev = judge(cfg1, summary, scans[0], window, logs=[shards[0].path], drifted=drifted)
        per = {shards[0].name: summary} if by_shard else {}
        return FleetEvidence(ev, shards, scope, per)
    for shard, sc in zip(shards, scans, strict=True):
        sc.notes[:] = [f"{shard.name}: {n}" for n in sc.notes]
    pooled = combine_scans(scans, by_time=True)
    logs = [s.path for s in shards]
    summary = _summary(pooled, logs, window, bench)
    # pooled: the ppl runs beside the first shard (or the config's [ppl] log)
    ev = judge(_shard_cfg(cfg, shards[0]), summary, pooled, window, logs=logs,
               halt=_pooled_halt(scans, shards))
    summaries: dict[str, Summary] = {}
    if by_shard or scope == "shard":
        summaries = {s.name: _summary(sc, [s.path], window, bench and scope == "shard")
                     for s, sc in zip(shards, scans, strict=True)}
    if scope == "shard":
        reports = {s.name: judge(_shard_cfg(cfg, s), summaries[s.name], sc, window,
                                 logs=[s.path]).report
                   for s, sc in zip(shards, scans, strict=True)}
        ev.report = shard_report(reports)
    return FleetEvidence(ev, shards, scope, summaries if by_shard else {})


def _summary(result: LogScan, logs: Sequence[Path], window: Window | None,
             bench: bool) -> Summary:
    if bench:
        return bench_summary(result, logs, window)
    summary = summarise(result.columns)
    summary.notes.extend(result.notes)
    return summary


def divergence_rows_set(shards: Sequence[Shard], window: Window | None = None, *,
                        verdict: str | None = None, category: str | None = None,
                        limit: int | None = None) -> list[dict[str, Any]]:
    """``divergences`` over several shards: each row names its shard (``"shard"``), rows
    in round start order, the last ``limit`` of them. One shard: rows as before."""
    from shadow_burnin.app.divergences import divergence_rows

    if len(shards) == 1:
        return divergence_rows(shards[0].path, window, verdict=verdict, category=category,
                               limit=limit)
    rows = [{"shard": s.name, **r} for s in shards
            for r in divergence_rows(s.path, window, verdict=verdict, category=category,
                                     limit=limit)]
    rows.sort(key=lambda r: str(r.get("ts", "")))
    return rows[-limit:] if limit else rows
