"""Two small tables the round index keeps beside ``core.columns.Columns`` (pure).

- ``AATable``: the log's A/A pairs as columns (one row per pair: its round, start time,
  bucket, verdict label and flip swing; its noise samples ``moves``/``drifts`` as two
  flat arrays with a count per pair), so ``bench`` summarises the A/A floor without
  decoding one dict per pair. :func:`summarise_aa_table` gives exactly what
  ``core.aa.summarise_aa`` gives for the same records (a test holds them to it).
- ``FlipTable``: for each no-match round whose forensics say something
  (``core.runverdict.flip_of`` not None), the fields of its ``Flip``, keyed by the
  round's row; :meth:`FlipTable.flips` gives them back for the run-level verdict.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar

import msgspec
import numpy as np

from shadow_burnin.core.aa import AASummary, aa_verdict, newcombe_diff
from shadow_burnin.core.records import BUCKETS, RecordKind, record_kind
from shadow_burnin.core.runverdict import Flip
from shadow_burnin.core.stats import wilson

_PARITY_CODES = np.array([b in ("exact", "prefix-only", "no-match") for b in BUCKETS])
_EXACT_CODE = BUCKETS.index("exact")


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and \
        math.isfinite(value)


def _epoch(stamp: Any) -> float:
    try:
        return datetime.fromisoformat(stamp).timestamp()
    except (TypeError, ValueError):
        return math.nan


class AATable(msgspec.Struct):
    round: np.ndarray  # int64, -1 when the pair names none
    ts: np.ndarray  # float64 epoch seconds (NaN: no valid ts)
    bucket: np.ndarray  # int8 code into BUCKETS, -1: none/unknown
    label: np.ndarray  # int32 into ``labels`` (forensics verdict or cause), -1: none
    swing: np.ndarray  # float64 flip swing, NaN: none
    n_moves: np.ndarray  # int32 per pair
    n_drifts: np.ndarray  # int32 per pair
    moves: np.ndarray  # float64, all pairs' margin moves back to back
    drifts: np.ndarray  # float64, all pairs' drifts back to back
    labels: list[str] = msgspec.field(default_factory=list)

    ROW_FIELDS: ClassVar[tuple[str, ...]] = (
        "round", "ts", "bucket", "label", "swing", "n_moves", "n_drifts")

    def __len__(self) -> int:
        return int(self.round.size)

    def select(self, mask: np.ndarray) -> AATable:
        mv = np.repeat(mask, self.n_moves)
        dr = np.repeat(mask, self.n_drifts)
        return AATable(self.round[mask], self.ts[mask], self.bucket[mask], self.label[mask],
                       self.swing[mask], self.n_moves[mask], self.n_drifts[mask],
                       self.moves[mv], self.drifts[dr], self.labels)


def empty_aa() -> AATable:
    return AATable(np.empty(0, np.int64), np.empty(0, np.float64), np.empty(0, np.int8),
                   np.empty(0, np.int32), np.empty(0, np.float64), np.empty(0, np.int32),
                   np.empty(0, np.int32), np.empty(0, np.float64), np.empty(0, np.float64))


def aa_table(records: Iterable[Mapping[str, Any]], labels: dict[str, int] | None = None
             ) -> AATable:
    """The A/A records among ``records`` as a table; ``labels``: a dictionary to extend
    (ids are first-seen order), else a fresh one."""
    labels = {} if labels is None else labels
    rows: list[tuple[int, float, int, int, float, int, int]] = []
    moves: list[float] = []
    drifts: list[float] = []
    for r in records:
        if record_kind(r) is not RecordKind.AA:
            continue
        fx = r.get("forensics")
        swing = float(fx["swing"]) if isinstance(fx, dict) and _finite(fx.get("swing")) \
            else math.nan
        label = -1
        if isinstance(fx, dict):
            name = fx.get("verdict") or fx.get("cause")
            if isinstance(name, str):
                label = labels.setdefault(name, len(labels))
        counts = []
        noise = r.get("noise")
        for key, out in (("moves", moves), ("drifts", drifts)):
            values = noise.get(key) if isinstance(noise, dict) else None
            got = [float(v) for v in values if _finite(v)] if isinstance(values, list) else []
            out.extend(got)
            counts.append(len(got))
        bucket = r.get("bucket")
        number = r.get("round")
        rows.append((number if isinstance(number, int) and not isinstance(number, bool)
                     else -1, _epoch(r.get("ts")),
                     BUCKETS.index(bucket) if bucket in BUCKETS else -1, label, swing,
                     counts[0], counts[1]))
    cols: list[Any] = list(zip(*rows, strict=True)) if rows else [[]] * 7
    kinds = (np.int64, np.float64, np.int8, np.int32, np.float64, np.int32, np.int32)
    arrays: dict[str, Any] = {name: np.array(c, dtype=k) for name, c, k in zip(
        AATable.ROW_FIELDS, cols, kinds, strict=True)}
    return AATable(**arrays, moves=np.array(moves, np.float64),
                   drifts=np.array(drifts, np.float64), labels=list(labels))


def concat_aa(parts: list[AATable]) -> AATable:
    """Join tables whose label ids are already in one dictionary (the last part's)."""
    parts = [p for p in parts if len(p)] or parts[-1:] or [empty_aa()]
    if len(parts) == 1:
        return parts[0]
    arrays: dict[str, Any] = {f: np.concatenate([getattr(p, f) for p in parts])
                              for f in (*AATable.ROW_FIELDS, "moves", "drifts")}
    return AATable(**arrays, labels=max((p.labels for p in parts), key=len))


def summarise_aa_table(t: AATable, ab_exact: int, ab_parity: int) -> AASummary:
    """``core.aa.summarise_aa`` over a table: the same figures, vectorised."""
    valid = t.bucket >= 0
    parity_mask = np.zeros(len(t), bool)
    parity_mask[valid] = _PARITY_CODES[t.bucket[valid]]
    parity = int(parity_mask.sum())
    exact = int((t.bucket == _EXACT_CODE).sum())
    counted = t.label[parity_mask & (t.label >= 0)]
    hist: Any = np.bincount(counted, minlength=len(t.labels)) if counted.size else []
    verdicts = {t.labels[i]: int(c) for i, c in enumerate(hist) if c}
    swings = t.swing[~np.isnan(t.swing)]
    tie = np.concatenate((swings, t.moves))
    diff = newcombe_diff(ab_exact, ab_parity, exact, parity)
    return AASummary(
        records=len(t), parity=parity, exact=exact,
        aa_exact_rate=exact / parity if parity else None,
        aa_exact_ci95=wilson(exact, parity),
        ab_exact_rate=ab_exact / ab_parity if ab_parity else None,
        ab_minus_aa=diff[0] if diff else None,
        ab_minus_aa_ci95=diff[1] if diff else None,
        verdicts=dict(sorted(verdicts.items())),
        swing_p99=_p99a(tie), drift_p99=_p99a(t.drifts),
        flips=int(swings.size), noise_tokens=int(t.moves.size),
        verdict=aa_verdict(parity, diff[1] if diff else None) if ab_parity else None,
    )


def _p99a(values: np.ndarray) -> float | None:
    """``core.aa._p99`` of an array (the same figure)."""
    return round(float(np.percentile(values, 99)), 6) if values.size else None


class FlipTable(msgspec.Struct):
    row: np.ndarray  # int64: the round's row in the columns
    swing: np.ndarray  # float64, NaN: None
    drift: np.ndarray
    swing_min: np.ndarray
    in_topk: np.ndarray  # int8: -1 None, 0 False, 1 True
    off_top1: np.ndarray  # int8 0/1
    reproducible: np.ndarray  # int8: -1 None, 0, 1

    FIELDS: ClassVar[tuple[str, ...]] = (
        "row", "swing", "drift", "swing_min", "in_topk", "off_top1", "reproducible")

    def __len__(self) -> int:
        return int(self.row.size)

    def shifted(self, by: int) -> FlipTable:
        return FlipTable(self.row + by, *(getattr(self, f) for f in self.FIELDS[1:]))

    def select_rows(self, mask: np.ndarray) -> FlipTable:
        """The flips of the rows where ``mask`` (over all rows) holds, renumbered as
        ``Columns.select(mask)`` renumbers rows."""
        keep = mask[self.row]
        new_row = np.cumsum(mask, dtype=np.int64) - 1
        return FlipTable(new_row[self.row[keep]],
                         *(getattr(self, f)[keep] for f in self.FIELDS[1:]))

    def flips(self, rows: np.ndarray | None = None) -> list[Flip]:
        """The flips (of the given rows only, when given), in row order."""
        keep = np.isin(self.row, rows) if rows is not None else slice(None)

        def num(a: np.ndarray) -> list[float | None]:
            out = a[keep].astype(object)
            out[np.isnan(a[keep])] = None
            return list(out)

        def tri(a: np.ndarray) -> list[bool | None]:
            values = a[keep]
            out = (values > 0).astype(object)
            out[values < 0] = None
            return list(out)

        return list(map(Flip, num(self.swing), num(self.drift), num(self.swing_min),
                        tri(self.in_topk), list((self.off_top1[keep] > 0).astype(object)),
                        tri(self.reproducible)))


def empty_flips() -> FlipTable:
    return FlipTable(np.empty(0, np.int64), *(np.empty(0, np.float64) for _ in range(3)),
                     *(np.empty(0, np.int8) for _ in range(3)))


def flip_table(found: Iterable[tuple[int, Flip]]) -> FlipTable:
    items = list(found)
    if not items:
        return empty_flips()

    def nan(x: float | None) -> float:
        return math.nan if x is None else x

    def tri(x: bool | None) -> int:
        return -1 if x is None else int(x)

    return FlipTable(
        np.array([r for r, _ in items], np.int64),
        np.array([nan(f.swing) for _, f in items], np.float64),
        np.array([nan(f.drift) for _, f in items], np.float64),
        np.array([nan(f.swing_min) for _, f in items], np.float64),
        np.array([tri(f.in_topk) for _, f in items], np.int8),
        np.array([int(f.off_top1) for _, f in items], np.int8),
        np.array([tri(f.reproducible) for _, f in items], np.int8))


def concat_flips(parts: list[FlipTable]) -> FlipTable:
    parts = [p for p in parts if len(p)]
    if not parts:
        return empty_flips()
    if len(parts) == 1:
        return parts[0]
    return FlipTable(*(np.concatenate([getattr(p, f) for p in parts])
                       for f in FlipTable.FIELDS))


def join_aa(parts: list[AATable]) -> AATable:
    """Join tables of different files (each with its own label dictionary): labels
    renumbered into one dictionary, first-seen order over the parts."""
    labels: dict[str, int] = {}
    out = []
    for p in parts:
        remap = np.array([labels.setdefault(n, len(labels)) for n in p.labels] + [-1],
                         np.int32)  # index -1 (no label) maps to the trailing -1
        out.append(AATable(p.round, p.ts, p.bucket, remap[p.label], p.swing, p.n_moves,
                           p.n_drifts, p.moves, p.drifts, list(labels)))
    if not out:
        return empty_aa()
    joined = concat_aa(out)
    joined.labels = list(labels)
    return joined


def join_scans_tables(aa: list[AATable | None], other: Sequence[Sequence[Mapping[str, Any]]],
                      flips: list[FlipTable | None], rows: list[int]
                      ) -> tuple[AATable | None, FlipTable | None]:
    """The A/A and flip tables of several scans read as one (in the given order): a part
    without an A/A table gives its A/A records from ``other``; the flips only when
    every part has them (rows shifted by the rows before)."""
    tables = [t if t is not None else aa_table(o) for t, o in zip(aa, other, strict=True)]
    joined_aa = join_aa(tables) if any(t is not None for t in aa) else None
    joined_flips = None
    if all(f is not None for f in flips):
        starts = np.concatenate(([0], np.cumsum(rows)[:-1])).astype(np.int64)
        joined_flips = concat_flips([f.shifted(int(s))
                                     for f, s in zip(flips, starts, strict=True)
                                     if f is not None])
    return joined_aa, joined_flips
