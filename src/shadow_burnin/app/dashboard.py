"""View models for the dashboard, the HTML report, ``status`` and ``/metrics``.

``Dashboard`` wraps one log's incremental reader (``io.log.livescan.LiveLog``: later
refreshes read only the new bytes) and turns what it folded into plain dicts: the
overview (``bench``'s summary and ``app.evidence``'s gate report over the same rounds,
halt and cutover state from ``<log>.events.jsonl``, the A/A noise floor), time series per
adaptive bin, the divergence list with its filters, and one round in full. Figures are
cached per version of the log, so a page view or a scrape costs nothing when no round
arrived.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from msgspec.structs import asdict, replace

from shadow_burnin.app.evidence import judge
from shadow_burnin.config import Config
from shadow_burnin.core.aa import summarise_aa
from shadow_burnin.core.breakdown import forensics_summary
from shadow_burnin.core.columns import EXACT, NOMATCH, PREFIX, Columns, concat_columns
from shadow_burnin.core.halt import HaltStatus, halt_status
from shadow_burnin.core.liveness import LivenessRule, conditions
from shadow_burnin.core.outcomes import REFIRE_OUTCOMES
from shadow_burnin.core.records import BUCKETS, SIDES
from shadow_burnin.core.sidetables import aa_table, concat_aa, join_aa, summarise_aa_table
from shadow_burnin.core.stats import summarise, wilson
from shadow_burnin.core.timefmt import iso_s as iso
from shadow_burnin.core.verdict import VERDICTS
from shadow_burnin.io.log.events import read_events
from shadow_burnin.io.log.livescan import Snapshot
from shadow_burnin.io.log.livesegments import LiveSegments
from shadow_burnin.io.log.logread import LogScan, Window, window_mask
from shadow_burnin.io.log.logset import Shard

CUTOVER_EVENTS = ("cutover", "rollback", "cutover-check")
# bin widths the time axis may use (seconds): the smallest giving at most MAX_BINS bins
BIN_WIDTHS = (1, 5, 10, 30, 60, 300, 600, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600,
              86400, 7 * 86400)
MAX_BINS = 120
CDF_POINTS = 101


def _f(x: Any) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else round(float(x), 3)


def bin_width(span: float) -> int:
    for w in BIN_WIDTHS:
        if span / w <= MAX_BINS:
            return w
    return BIN_WIDTHS[-1]


def series(cols: Columns) -> dict[str, Any]:
    """Per-bin figures over time: what the plots draw (pure, from the columns)."""
    n = len(cols)
    if not n:
        return {"width": 0, "bins": [], "cdf": {s: [] for s in SIDES}, "categories": []}
    ts = cols.ts
    t0 = math.floor(float(ts.min()))
    width = bin_width(float(ts.max()) - t0)
    idx = ((ts - t0) // width).astype(np.int64)
    order = np.argsort(idx, kind="stable")
    sidx = idx[order]
    uniq, starts = np.unique(sidx, return_index=True)
    ends = np.append(starts[1:], n)
    bucket = cols.bucket[order]
    # p50/p95 per bin and side, every bin at once (no percentile call per bin)
    pct = {s: group_percentiles(sidx, cols.latency[s][order], uniq, (50, 95)) for s in SIDES}
    bins = []
    for k, (b, lo, hi) in enumerate(zip(uniq, starts, ends, strict=True)):
        bk = np.bincount(bucket[lo:hi].astype(np.int64), minlength=len(BUCKETS))
        parity = int(bk[EXACT] + bk[PREFIX] + bk[NOMATCH])
        ci = wilson(int(bk[EXACT]), parity)
        row: dict[str, Any] = {
            "t": t0 + int(b) * width, "rounds": int(hi - lo), "parity": parity,
            "exact": int(bk[EXACT]), "no_match": int(bk[NOMATCH]),
            "prefix_only": int(bk[PREFIX]),
            "unreachable": {"v1": int(bk[3] + bk[5]), "v2": int(bk[4] + bk[5])},
            "exact_rate": int(bk[EXACT]) / parity if parity else None,
            "ci": list(ci) if ci else None,
        }
        p95 = {}
        for s in SIDES:
            q = [pct[s][50][k], pct[s][95][k]]
            row[f"{s}_p50"], row[f"{s}_p95"] = _f(q[0]), _f(q[1])
            p95[s] = q[1]
        row["gap_p95"] = _f(p95["v2"] - p95["v1"])
        bins.append(row)
    cdf = {}
    for s in SIDES:
        v = cols.latency[s][~np.isnan(cols.latency[s])]
        if v.size:
            qs = np.linspace(0, 100, CDF_POINTS)
            cdf[s] = [[_f(x), round(q / 100, 3)] for x, q in zip(np.percentile(v, qs), qs,
                                                                   strict=True)]
        else:
            cdf[s] = []
    return {"width": width, "bins": bins, "cdf": cdf}


def group_percentiles(groups: np.ndarray, values: np.ndarray, keys: np.ndarray,
                      qs: tuple[int, ...]) -> dict[int, np.ndarray]:
    """Percentiles of ``values`` (NaN skipped) per group in ``keys`` (sorted; ``groups``
    sorted too), every group at once: numpy's linear interpolation between order
    statistics; NaN for a group with no value."""
    ok = ~np.isnan(values)
    g, v = groups[ok], values[ok].copy()
    first = np.searchsorted(g, keys, side="left")
    n = np.searchsorted(g, keys, side="right") - first
    for lo_, n_ in zip(first.tolist(), n.tolist(), strict=True):
        v[lo_:lo_ + n_].sort()  # each group's values in order, in place
    out = {}
    top = max(v.size - 1, 0)
    for q in qs:
        pos = q / 100 * np.maximum(n - 1, 0)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, np.maximum(n - 1, 0))
        a, b = v[np.minimum(first + lo, top)], v[np.minimum(first + hi, top)]
        got = a + (b - a) * (pos - lo) if v.size else np.zeros(keys.size)
        out[q] = np.where(n > 0, got, np.nan)
    return out


def _code_name(names: tuple[str, ...], code: int) -> str | None:
    return names[code - 1] if 0 < code <= len(names) else None


class Filters(msgspec.Struct, frozen=True):
    bucket: str | None = None
    verdict: str | None = None
    category: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int = 200

    @classmethod
    def parse(cls, q: dict[str, str], parse_time: Callable[[str], float]) -> Filters:
        def opt(k: str) -> str | None:
            v = (q.get(k) or "").strip()
            return v or None

        since, until = opt("since"), opt("until")
        try:
            limit = max(1, min(int(q.get("limit") or 200), 5000))
        except ValueError:
            limit = 200
        return cls(opt("bucket"), opt("verdict"), opt("category"),
                   parse_time(since) if since else None, parse_time(until) if until else None,
                   limit)


# stays a dataclass: fields set in __post_init__ (init=False), which msgspec has no way to say
@dataclass
class Dashboard:
    """One log, read incrementally; figures cached per version."""

    cfg: Config
    window: Window | None = None
    log: Path = field(init=False)
    live: LiveSegments = field(init=False)
    _cache: dict[str, Any] = field(default_factory=dict)
    _key: tuple[int, int, int] | None = None
    _windowed: Any = None
    _lock: threading.RLock = field(default_factory=threading.RLock)

    def __post_init__(self) -> None:
        self.log = Path(self.cfg.paths.log)
        self.live = LiveSegments(self.log)  # one LiveLog per rotated segment

    def snapshot(self) -> Snapshot:
        """Fold new bytes (LogError for a missing/foreign log); resets the cache on change."""
        with self._lock:
            snap = self.live.refresh()
            try:
                ev = self.log.with_name(self.log.name + ".events.jsonl").stat().st_size
            except OSError:
                ev = -1
            key = (snap.version, snap.size, ev)
            if key != self._key:
                self._cache, self._key = {}, key
                self._windowed = self._apply_window(snap)
            return self._windowed

    def _apply_window(self, snap: Snapshot) -> Snapshot:
        w = self.window
        if w is None or (w.since is None and w.until is None):
            return snap
        ts = snap.columns.ts
        mask = np.ones(len(ts), dtype=bool)
        if w.since is not None:
            mask &= ts >= w.since
        if w.until is not None:
            mask &= ts < w.until
        other = [r for r in snap.other if _in_window(w, r)]
        aa = snap.aa.select(window_mask(snap.aa.ts, w)) if snap.aa is not None else None
        return Snapshot(snap.columns.select(mask), other, snap.rounds[mask],
                        snap.offsets[mask], snap.errors, snap.notes, snap.version, snap.size,
                        aa)

    def version(self) -> str:
        self.snapshot()
        return ":".join(map(str, self._key or ()))

    def cached(self, name: str, make: Callable[[Snapshot], Any]) -> Any:
        with self._lock:
            snap = self.snapshot()
            if name not in self._cache:
                self._cache[name] = make(snap)
            return self._cache[name]

    # -- overview ----------------------------------------------------------------------

    def overview(self) -> dict[str, Any]:
        return dict(self.cached("overview", self._overview))

    def _overview(self, snap: Snapshot) -> dict[str, Any]:
        cols = snap.columns
        summary = summarise(cols)
        summary.notes.extend(snap.notes)
        summary.forensics = forensics_summary(cols)
        aa_records = [r for r in snap.other if r.get("kind") == "aa"]
        if snap.aa is not None:  # the index's A/A table, and the pairs folded after it
            table = concat_aa([snap.aa, aa_table(aa_records, {
                n: i for i, n in enumerate(snap.aa.labels)})])
            summary.aa = summarise_aa_table(table, summary.counts["exact"],
                                            summary.parity_rounds).to_json()
        else:
            summary.aa = summarise_aa(aa_records, summary.counts["exact"],
                                      summary.parity_rounds).to_json()
        events = self.events(snap)
        ev = judge(self.cfg, summary, LogScan(cols, aa_records + events, []),
                   logs=self.logs(), halt=self.pooled_halt())
        cutover = [e for e in events if e.get("event") in CUTOVER_EVENTS]
        out = summary.to_json()
        out.update(
            first_ts=iso(summary.first_ts), last_ts=iso(summary.last_ts),
            last_epoch=summary.last_ts, gates=ev.report.to_json(), halt=ev.halt.to_json(),
            cutover=cutover[-1] if cutover else None, cutover_events=len(cutover),
            events=len(events), log=self.name(), notes=summary.notes + ev.notes,
        )
        return out

    def events(self, snap: Snapshot) -> list[dict[str, Any]]:
        """The log's events in the window (inline ones of older logs and
        ``<log>.events.jsonl``), in time order."""
        inline = [r for r in snap.other if r.get("kind") == "event"]
        return [e for e in read_events(self.log, inline) if _in_window(self.window, e)]

    def logs(self) -> list[Path]:
        """The log files behind this view (the run-level verdict's second pass)."""
        return [self.log]

    def pooled_halt(self) -> HaltStatus | None:
        """The halt when several logs' halts are folded (None: from the events)."""
        return None

    def name(self) -> str:
        return str(self.log)

    # -- plots -------------------------------------------------------------------------

    def series(self) -> dict[str, Any]:
        def make(snap: Snapshot) -> dict[str, Any]:
            out = series(snap.columns)
            by_cat = self.overview()["by_category"]
            out["categories"] = [{"category": c, "exact_rate": v["exact_match_rate"],
                                  "parity": v["parity_rounds"], "rounds": v["rounds"]}
                                 for c, v in by_cat.items()]
            return out

        return dict(self.cached("series", make))

    # -- divergences -------------------------------------------------------------------

    def divergences(self, f: Filters) -> dict[str, Any]:
        snap = self.snapshot()
        cols = snap.columns
        mask = cols.bucket != EXACT
        if f.bucket:
            mask &= cols.bucket == (BUCKETS.index(f.bucket) if f.bucket in BUCKETS else -1)
        if f.verdict:
            code = VERDICTS.index(f.verdict) + 1 if f.verdict in VERDICTS else -9
            mask &= cols.extra["verdict"] == code
        if f.category:
            cat = cols.categories.index(f.category) if f.category in cols.categories else -9
            mask &= cols.category == cat
        if f.since is not None:
            mask &= cols.ts >= f.since
        if f.until is not None:
            mask &= cols.ts < f.until
        rows = np.flatnonzero(mask)
        total = int(rows.size)
        shown = rows[:f.limit]
        items = []
        for i in shown:
            items.append({
                "round": int(snap.rounds[i]), "ts": iso(float(cols.ts[i])),
                "category": cols.categories[int(cols.category[i])],
                "prompt_id": cols.prompts[int(cols.prompt[i])],
                "bucket": BUCKETS[int(cols.bucket[i])],
                "verdict": _code_name(VERDICTS, int(cols.extra["verdict"][i])),
                "refire": _code_name(REFIRE_OUTCOMES, int(cols.extra["refire"][i])),
                "prefix_chars": _f(cols.prefix[i]),
                "latency": {s: _f(cols.latency[s][i]) for s in SIDES},
            })
        return {"total": total, "shown": len(items), "items": items,
                "categories": sorted(cols.categories), "buckets": list(BUCKETS[1:]),
                "verdicts": list(VERDICTS), "filters": asdict(f)}

    # -- one round ---------------------------------------------------------------------

    def round(self, number: int) -> dict[str, Any] | None:
        self.snapshot()
        return self.live.read_round(number)

    def worst_prompts(self) -> list[dict[str, Any]]:
        return list(self.overview()["top_divergent_prompts"])

    def first_divergences(self, n: int) -> list[dict[str, Any]]:
        """The first ``n`` non-exact parity rounds, records in full."""
        snap = self.snapshot()
        cols = snap.columns
        rows = np.flatnonzero((cols.bucket == PREFIX) | (cols.bucket == NOMATCH))[:n]
        out = []
        for i in rows:
            rec = self.live.read_round(int(snap.rounds[i]))
            if rec is not None:
                out.append(rec)
        return out


def _in_window(w: Window | None, record: dict[str, Any]) -> bool:
    if w is None:
        return True
    try:
        t = datetime.fromisoformat(str(record.get("ts"))).timestamp()
    except ValueError:
        return True
    return w.contains(t)


def liveness(cols: Columns, now: float, rule: LivenessRule | None = None
             ) -> list[dict[str, Any]]:
    """What the halt does not cover, by the one rule of ``core.liveness`` (the watcher
    inside ``run`` applies it too): no round committed for ``rule.stall_s``, or a side
    unreachable in ``spike_rounds`` of the last ``spike_window`` rounds."""
    rule = rule or LivenessRule()
    if not len(cols):
        return []
    # the last rounds in log order: the order the watcher inside ``run`` saw them commit
    recent = [BUCKETS[int(b)] for b in cols.bucket[-rule.spike_window:]]
    return conditions(rule, float(cols.ts.max()), recent, now)


def status(view: Dashboard, now: float, window_s: float = 600.0,
           rule: LivenessRule | None = None) -> dict[str, Any]:
    """``status``: rate over the last ``window_s`` of log time before ``now``, age of the
    last round, the halt, an ETA for each waiting gate that grows with time, and the
    liveness alerts (``liveness``)."""
    snap = view.snapshot()
    ov = view.overview()
    ts = snap.columns.ts
    last = float(ts.max()) if ts.size else None
    recent = int(np.count_nonzero(ts > now - window_s)) if ts.size else 0
    rpm = recent / (window_s / 60.0)
    etas = []
    for g in ov["gates"]["gates"]:
        if g["state"] != "waiting":
            continue
        eta, why = None, "does not grow with time"
        current = g["current"]
        if g["metric"] == "rounds":
            need = max(0.0, g["target"] - (current or 0))
            if rpm > 0:
                eta, why = now + need / rpm * 60.0, ""
            else:
                why = f"no round in the last {window_s / 60:g} min"
        elif g["metric"] == "wall_time_h" and ov["rounds"]:
            need = max(0.0, g["target"] - (current or 0)) * 3600.0
            eta, why = now + need, ""
        etas.append({"gate": g["gate"], "label": g["label"], "current": current,
                     "target": g["target"], "eta": iso(eta) if eta else None,
                     "why": why})
    return {"log": str(view.log), "rounds": ov["rounds"], "rounds_per_minute": round(rpm, 2),
            "alerts": liveness(snap.columns, now, rule),
            "window_s": window_s, "last_round_ts": iso(last),
            "last_round_age_s": round(now - last, 1) if last is not None else None,
            "halt": ov["halt"], "verdict": ov["gates"]["verdict"], "waiting": etas}


def shard_cfg(cfg: Config, path: Path) -> Config:
    """The config with ``path`` as its log (its ppl runs beside it, unless the config
    names one ppl file for all)."""
    return replace(cfg, paths=replace(cfg.paths, log=str(path)))


@dataclass  # a Dashboard, so a dataclass too
class FleetDashboard(Dashboard):
    """Several logs (a fleet's shards): one :class:`Dashboard` per shard (``views``, by
    shard name) and, as this object, the pooled view of all of them (every shard's rounds
    in round start order; a halt active in any shard is active here; events of every
    shard). The pooled view has no round pages (round numbers repeat across shards):
    those are read from the shard's own view."""

    shards: list[Shard] = field(default_factory=list)
    views: dict[str, Dashboard] = field(init=False)
    shard_of: np.ndarray = field(init=False)  # shard index per pooled row
    _shards_key: tuple[Any, ...] | None = None
    _version: int = 0

    def __post_init__(self) -> None:
        self.log = self.shards[0].path
        self.views = {s.name: Dashboard(shard_cfg(self.cfg, s.path), self.window)
                      for s in self.shards}
        self.shard_of = np.empty(0, np.int32)

    def snapshot(self) -> Snapshot:
        with self._lock:
            snaps = [v.snapshot() for v in self.views.values()]
            key = tuple(v._key for v in self.views.values())
            if key != self._shards_key:
                self._shards_key = key
                self._version += 1
                self._windowed = self._join(snaps)
                self._cache = {}
                self._key = (self._version, self._windowed.size, len(self.views))
            return self._windowed

    def _join(self, snaps: list[Snapshot]) -> Snapshot:
        names = list(self.views)
        columns = concat_columns([s.columns for s in snaps])
        shard_of = np.concatenate([np.full(len(s.columns), i, np.int32)
                                   for i, s in enumerate(snaps)] or [np.empty(0, np.int32)])
        rounds = np.concatenate([s.rounds for s in snaps])
        offsets = np.concatenate([s.offsets for s in snaps])
        order = np.argsort(columns.ts, kind="stable")  # shards ran side by side
        errors: dict[str, Counter[str]] = {side: Counter() for side in SIDES}
        for snap in snaps:
            for side in SIDES:
                errors[side].update(snap.errors.get(side, Counter()))
        self.shard_of = shard_of[order]
        aa = [s.aa for s in snaps if s.aa is not None]
        return Snapshot(
            columns=columns.select(order), rounds=rounds[order], offsets=offsets[order],
            other=sorted((r for s in snaps for r in s.other),
                         key=lambda r: str(r.get("ts", ""))),
            errors=errors, notes=[f"{n}: {note}" for n, s in zip(names, snaps, strict=True)
                                  for note in s.notes],
            version=self._version, size=sum(s.size for s in snaps),
            aa=join_aa(aa) if aa else None)

    def events(self, snap: Snapshot) -> list[dict[str, Any]]:
        return sorted((e for v in self.views.values() for e in v.events(v.snapshot())),
                      key=lambda e: str(e.get("ts", "")))

    def logs(self) -> list[Path]:
        return [s.path for s in self.shards]

    def pooled_halt(self) -> HaltStatus | None:
        """Each shard's halts and acknowledgements folded on their own (an ack forgives
        only its own shard's halt); active when any shard's is."""
        statuses = [halt_status(v.events(v.snapshot())) for v in self.views.values()]
        active = [st for st in statuses if st.active]
        pick = active[0] if active else next((st for st in statuses if st.halt), None)
        return replace(pick or HaltStatus(), active=bool(active),
                       halts=sum(st.halts for st in statuses),
                       acks=sum(st.acks for st in statuses))

    def name(self) -> str:
        return f"{len(self.shards)} shards"

    def _overview(self, snap: Snapshot) -> dict[str, Any]:
        out = super()._overview(snap)
        out["shards"] = [shard_row(name, v.overview()) for name, v in self.views.items()]
        return out

    def divergences(self, f: Filters) -> dict[str, Any]:
        """Every shard's divergences (each row names its ``shard``), in round start
        order, the first ``f.limit``."""
        parts = {name: v.divergences(f) for name, v in self.views.items()}
        items = sorted(({"shard": name, **item} for name, d in parts.items()
                        for item in d["items"]), key=lambda r: str(r["ts"]))[:f.limit]
        return {"total": sum(d["total"] for d in parts.values()), "shown": len(items),
                "items": items,
                "categories": sorted({c for d in parts.values() for c in d["categories"]}),
                "buckets": list(BUCKETS[1:]), "verdicts": list(VERDICTS),
                "filters": asdict(f), "shards": list(self.views)}

    def round(self, number: int) -> dict[str, Any] | None:
        return None  # a round number names a round only within its shard

    def first_divergences(self, n: int) -> list[dict[str, Any]]:
        """The first ``n`` non-exact parity rounds of the fleet (round start order), each
        record in full with its ``shard``."""
        found = [{"shard": name, **rec} for name, v in self.views.items()
                 for rec in v.first_divergences(n)]
        return sorted(found, key=lambda r: str(r.get("ts", "")))[:n]


def shard_row(name: str, ov: dict[str, Any]) -> dict[str, Any]:
    """One shard's line of the fleet's per-shard table."""
    return {"shard": name, "rounds": ov["rounds"], "parity_rounds": ov["parity_rounds"],
            "exact_match_rate": ov["exact_match_rate"],
            "unreachable_rate": ov["unreachable_rate"],
            "p95": {s: (ov["latency_ms"][s] or {}).get("p95") for s in SIDES},
            "halt": bool(ov["halt"]["active"]), "verdict": ov["gates"]["verdict"],
            "last_ts": ov["last_ts"]}


def fleet_of(cfg: Config, specs: Sequence[str]) -> list[Shard] | None:
    """The shards ``--log`` names when it names several logs or a glob (each checked:
    ``LogError`` for a missing one or one that is not a log); None for the config's one
    log or one plain file, read as before (a log not there yet is shown by the pages)."""
    from shadow_burnin.app.logset import is_glob, shards_of

    if not specs or (len(specs) == 1 and not is_glob(specs[0])):
        return None
    return shards_of(cfg, specs)


def dashboard_for(cfg: Config, shards: Sequence[Shard] | None, window: Window | None = None
                  ) -> Dashboard:
    """One shard: its :class:`Dashboard` (as before); several: a :class:`FleetDashboard`;
    None: the config's log."""
    if not shards:
        return Dashboard(cfg, window)
    if len(shards) == 1:
        return Dashboard(shard_cfg(cfg, shards[0].path), window)
    return FleetDashboard(cfg, window, shards=list(shards))


def fleet_status(view: Dashboard, now: float, window_s: float = 600.0,
                 rule: LivenessRule | None = None) -> dict[str, Any]:
    """``status`` of one log, or of a fleet: the pooled figures (rate and rounds summed,
    the last round of any shard, the pooled halt and gates), each shard's liveness
    alerts (named ``shard: …``) and one line per shard (``shards``)."""
    if not isinstance(view, FleetDashboard):
        return status(view, now, window_s, rule)
    out = status(view, now, window_s, rule)
    shards = [{"shard": name, **status(v, now, window_s, rule)}
              for name, v in view.views.items()]
    out["alerts"] = [{**a, "shard": s["shard"], "text": f"{s['shard']}: {a['text']}"}
                     for s in shards for a in s["alerts"]]
    out["shards"] = shards
    out["log"] = view.name()
    return out
