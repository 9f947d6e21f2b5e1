"""Statistics over a log: pure functions from columns to a ``Summary``.

``ColumnBuilder`` folds decoded log records into numpy columns (one pass, bounded
memory: no texts are kept); ``summarise`` turns columns into figures. Definitions:

- ``exact_match_rate`` = exact / parity rounds (rounds where both sides replied), with a
  Wilson 95 % interval;
- ``unreachable_rate[side]`` = (side-unreachable + both-unreachable) / rounds;
- latency percentiles per side over the rounds where that side replied (linear
  interpolation between order statistics); ``p95_gap_ms`` = p95(v2) − p95(v1);
- ``median_prefix_match_chars`` over parity rounds that were not exact.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .outcomes import NO_CODES, forensic_codes
from .records import BUCKETS, PARITY_BUCKETS, SIDES

BUCKET_CODE = {b: i for i, b in enumerate(BUCKETS)}
EXACT, PREFIX, NOMATCH = (BUCKET_CODE[b] for b in PARITY_BUCKETS)
_NAN = float("nan")


@dataclass
class Columns:
    bucket: np.ndarray
    latency: dict[str, np.ndarray]
    ttft: dict[str, np.ndarray]
    prefix: np.ndarray
    category: np.ndarray
    prompt: np.ndarray
    ts: np.ndarray
    categories: list[str]
    prompts: list[str]
    # forensics per round: verdict, cause, refire (codes of core.verdict), div_token (−1)
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.bucket.size)

    def select(self, mask: np.ndarray) -> Columns:
        """The rows where ``mask`` is true (category/prompt names kept)."""
        return Columns(
            bucket=self.bucket[mask], latency={s: v[mask] for s, v in self.latency.items()},
            ttft={s: v[mask] for s, v in self.ttft.items()}, prefix=self.prefix[mask],
            category=self.category[mask], prompt=self.prompt[mask], ts=self.ts[mask],
            categories=self.categories, prompts=self.prompts,
            extra={k: v[mask] for k, v in self.extra.items()},
        )


class ColumnBuilder:
    """Accumulates round records (dicts as decoded from the log) into columns.

    ``add`` takes one record; the loop is kept tight because ``bench`` folds millions.
    Timestamps are kept as strings and parsed in one vectorised step by ``build``.
    """

    def __init__(self) -> None:
        self._bucket: list[int] = []
        self._lat: dict[str, list[float]] = {s: [] for s in SIDES}
        self._ttft: dict[str, list[float]] = {s: [] for s in SIDES}
        self._prefix: list[float] = []
        self._cat: list[int] = []
        self._prompt: list[int] = []
        self._ts: list[str] = []
        self._cats: dict[str, int] = {}
        self._prompts: dict[str, int] = {}
        self._fx: dict[int, tuple[int, int, int, int]] = {}  # row → codes, rows with any

    def add(self, record: dict[str, Any]) -> None:
        """Fold one round. Raises KeyError/TypeError for a record of the wrong shape."""
        self.add_all((record,))

    def add_all(self, records: Iterable[dict[str, Any]]) -> None:
        """Fold many rounds: ``bench``'s hot loop, with every lookup bound to a local."""
        bucket_add, prefix_add, ts_add = (self._bucket.append, self._prefix.append,
                                          self._ts.append)
        lat1, lat2 = self._lat["v1"].append, self._lat["v2"].append
        tt1, tt2 = self._ttft["v1"].append, self._ttft["v2"].append
        cat_add, prompt_add, fx = self._cat.append, self._prompt.append, self._fx
        cats, prompts, codes, nan = self._cats, self._prompts, BUCKET_CODE, _NAN
        for record in records:
            bucket_add(codes[record["bucket"]])
            r1, r2 = record["v1"], record["v2"]
            if r1.get("error") is None and r1.get("text") is not None:
                lat, tt = r1.get("latency_ms"), r1.get("ttft_ms")
                lat1(nan if lat is None else lat)
                tt1(nan if tt is None else tt)
            else:
                lat1(nan)
                tt1(nan)
            if r2.get("error") is None and r2.get("text") is not None:
                lat, tt = r2.get("latency_ms"), r2.get("ttft_ms")
                lat2(nan if lat is None else lat)
                tt2(nan if tt is None else tt)
            else:
                lat2(nan)
                tt2(nan)
            pm = record.get("prefix_match_chars")
            prefix_add(nan if pm is None else pm)
            cat = record.get("category", "")
            index = cats.get(cat)
            if index is None:
                index = cats[cat] = len(cats)
            cat_add(index)
            pid = record.get("prompt_id", "")
            index = prompts.get(pid)
            if index is None:
                index = prompts[pid] = len(prompts)
            prompt_add(index)
            ts_add(record["ts"])
            forensics, refire = record.get("forensics"), record.get("refire")
            if forensics is not None or refire is not None:
                fx[len(self._bucket) - 1] = forensic_codes(forensics, refire)

    def add_rows(self, rows: Sequence[Any]) -> bool:
        """Fold rounds given as objects with attributes (the fast log reader's rows).

        Each row has ``bucket``, ``ts``, ``category``, ``prompt_id``,
        ``prefix_match_chars``, ``forensics``, ``refire`` and ``v1``/``v2`` sides with
        ``replied``, ``latency_ms`` and ``ttft_ms``: the same fold as ``add_all``, column
        by column. All or nothing: False (and nothing added) when a row lacks a bucket,
        a side or a ``ts``.
        """
        nan = _NAN
        buckets = [BUCKET_CODE.get(r.bucket) for r in rows]  # type: ignore[arg-type]
        ts = [r.ts for r in rows]
        pairs = [(r.v1, r.v2) for r in rows]
        if None in buckets or None in ts or any(a is None or b is None for a, b in pairs):
            return False
        lat: dict[str, list[float]] = {}
        ttft: dict[str, list[float]] = {}
        for i, side in enumerate(SIDES):
            sides = [p[i] for p in pairs]
            replied = [s.replied for s in sides]
            lat[side] = [s.latency_ms if ok and s.latency_ms is not None else nan
                         for s, ok in zip(sides, replied, strict=True)]
            ttft[side] = [s.ttft_ms if ok and s.ttft_ms is not None else nan
                          for s, ok in zip(sides, replied, strict=True)]
        first = len(self._bucket)
        self._bucket += buckets
        for side in SIDES:
            self._lat[side] += lat[side]
            self._ttft[side] += ttft[side]
        self._prefix += [nan if r.prefix_match_chars is None else r.prefix_match_chars
                         for r in rows]
        cats, prompts = self._cats, self._prompts
        self._cat += [cats.setdefault(r.category, len(cats)) for r in rows]
        self._prompt += [prompts.setdefault(r.prompt_id, len(prompts)) for r in rows]
        self._ts += ts
        self._fx.update((first + i, forensic_codes(r.forensics, r.refire))
                        for i, r in enumerate(rows)
                        if r.forensics is not None or r.refire is not None)
        return True

    def build(self) -> Columns:
        return Columns(
            bucket=np.array(self._bucket, dtype=np.int8),
            latency={s: np.array(self._lat[s], dtype=np.float64) for s in SIDES},
            ttft={s: np.array(self._ttft[s], dtype=np.float64) for s in SIDES},
            prefix=np.array(self._prefix, dtype=np.float64),
            category=np.array(self._cat, dtype=np.int32),
            prompt=np.array(self._prompt, dtype=np.int32),
            ts=epoch_seconds(self._ts),
            categories=list(self._cats),
            prompts=list(self._prompts),
            extra=fx_columns(self._fx, len(self._bucket)),
        )


FX_COLUMNS = (("verdict", np.int8), ("cause", np.int8), ("refire", np.int8),
              ("div_token", np.int32))


def fx_columns(codes: dict[int, tuple[int, int, int, int]], n: int) -> dict[str, np.ndarray]:
    """Forensic code columns for ``n`` rounds; rows missing from ``codes`` have none."""
    table = np.tile(np.array(NO_CODES, dtype=np.int32), (n, 1))
    if codes:
        table[np.fromiter(codes, dtype=np.int64, count=len(codes))] = list(codes.values())
    return {name: table[:, i].astype(kind) for i, (name, kind) in enumerate(FX_COLUMNS)}


def concat_columns(parts: list[Columns]) -> Columns:
    """Join columns built separately (e.g. per file range), re-indexing names."""
    categories: dict[str, int] = {}
    prompts: dict[str, int] = {}
    cat_parts, prompt_parts = [], []
    for part in parts:
        cat_map = np.array([categories.setdefault(c, len(categories)) for c in part.categories]
                           or [0], dtype=np.int32)
        prompt_map = np.array([prompts.setdefault(p, len(prompts)) for p in part.prompts]
                              or [0], dtype=np.int32)
        cat_parts.append(cat_map[part.category])
        prompt_parts.append(prompt_map[part.prompt])

    def cat(arrays: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(arrays)
    return Columns(
        bucket=cat([p.bucket for p in parts]),
        latency={s: cat([p.latency[s] for p in parts]) for s in SIDES},
        ttft={s: cat([p.ttft[s] for p in parts]) for s in SIDES},
        prefix=cat([p.prefix for p in parts]),
        category=cat(cat_parts).astype(np.int32),
        prompt=cat(prompt_parts).astype(np.int32),
        ts=cat([p.ts for p in parts]),
        categories=list(categories),
        prompts=list(prompts),
        extra={k: cat([p.extra[k] for p in parts]) for k in parts[0].extra} if parts else {},
    )


def epoch_seconds(stamps: list[str]) -> np.ndarray:
    """ISO-8601 UTC stamps (``…Z`` or ``+00:00``) → float epoch seconds, vectorised."""
    if not stamps:
        return np.empty(0, dtype=np.float64)
    fast = _epoch_seconds_fixed(stamps)
    if fast is not None:
        return fast
    from datetime import datetime

    if all(s.endswith("Z") for s in stamps):
        try:
            parsed = np.array([s[:-1] for s in stamps]).astype("datetime64[us]")
            return parsed.astype(np.int64) / 1e6
        except ValueError:
            pass
    return np.array([datetime.fromisoformat(s).timestamp() for s in stamps])


_FIXED = b"0000-00-00T00:00:00.000Z"  # the runner's stamp: digits where the zeros are
_DIGITS = np.frombuffer(_FIXED, dtype=np.uint8) == ord("0")


def _epoch_seconds_fixed(stamps: list[str]) -> np.ndarray | None:
    """The common case, millions of ``YYYY-MM-DDTHH:MM:SS.mmmZ`` stamps, as array arithmetic.

    None when any stamp has another shape (or an impossible date): the caller parses
    those. Same result as the general path, to the microsecond.
    """
    try:
        raw = np.array(stamps, dtype=f"S{len(_FIXED) + 1}")
    except UnicodeEncodeError:
        return None
    b = raw.view(np.uint8).reshape(len(stamps), len(_FIXED) + 1)
    seps = np.frombuffer(_FIXED, dtype=np.uint8)[~_DIGITS]
    digits = b[:, :-1][:, _DIGITS]
    if (b[:, -1].any() or not (b[:, :-1][:, ~_DIGITS] == seps).all()
            or ((digits < ord("0")) | (digits > ord("9"))).any()):
        return None
    d = digits.astype(np.int32) - ord("0")
    year = d[:, 0] * 1000 + d[:, 1] * 100 + d[:, 2] * 10 + d[:, 3]
    month, day, hour, minute, sec = (d[:, i] * 10 + d[:, i + 1] for i in range(4, 14, 2))
    millis = d[:, 14] * 100 + d[:, 15] * 10 + d[:, 16]
    if ((month < 1) | (month > 12) | (day < 1) | (hour > 23) | (minute > 59) | (sec > 59)).any():
        return None
    # month start and length from a table over the months present (a few, usually)
    months = (year - 1970) * 12 + month - 1
    low = int(months.min())
    table = np.arange(low, int(months.max()) + 2).astype("datetime64[M]")
    table = table.astype("datetime64[D]").astype(np.int64)
    start, length = table[months - low], np.diff(table)[months - low]
    if (day > length).any():
        return None
    seconds = (start + day - 1) * 86400 + hour * 3600 + minute * 60 + sec
    return (seconds * 1_000_000 + millis * 1000) / 1e6


def wilson(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float] | None:
    """Wilson score interval for a binomial proportion; None when n == 0."""
    if n <= 0:
        return None
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (round(max(0.0, centre - half), 9), round(min(1.0, centre + half), 9))


def percentiles(values: np.ndarray, qs: tuple[int, ...] = (50, 95, 99)) -> dict[str, float] | None:
    """Percentiles of the non-NaN values (``p50`` …), None when there are none."""
    finite = values[~np.isnan(values)]
    if finite.size == 0:
        return None
    got = np.percentile(finite, qs)
    return {f"p{q}": round(float(v), 3) for q, v in zip(qs, got, strict=True)}


@dataclass
class Summary:
    rounds: int
    parity_rounds: int
    counts: dict[str, int]
    exact_match_rate: float | None
    exact_match_ci95: tuple[float, float] | None
    unreachable_rate: dict[str, float | None]
    latency_ms: dict[str, dict[str, float] | None]
    ttft_ms: dict[str, dict[str, float] | None]
    p95_gap_ms: float | None
    median_prefix_match_chars: float | None
    by_category: dict[str, dict[str, Any]]
    top_divergent_prompts: list[dict[str, Any]]
    first_ts: float | None = None
    last_ts: float | None = None
    notes: list[str] = field(default_factory=list)
    forensics: dict[str, Any] | None = None  # core.breakdown.forensics_summary
    aa: dict[str, Any] | None = None  # core.aa.summarise_aa

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k not in ("first_ts", "last_ts")}
        out["exact_match_ci95"] = list(self.exact_match_ci95) if self.exact_match_ci95 else None
        return out


def _rate(num: int, den: int) -> float | None:
    return num / den if den else None


def summarise(cols: Columns, top: int = 10) -> Summary:
    """All of ``bench``'s figures from the columns."""
    n = len(cols)
    counts_arr = np.bincount(cols.bucket.astype(np.int64), minlength=len(BUCKETS)) if n else \
        np.zeros(len(BUCKETS), dtype=np.int64)
    counts = {b: int(counts_arr[i]) for i, b in enumerate(BUCKETS)}
    parity = counts["exact"] + counts["prefix-only"] + counts["no-match"]
    both = counts["both-unreachable"]
    lat = {s: percentiles(cols.latency[s]) for s in SIDES}
    gap = None
    if lat["v1"] and lat["v2"]:
        gap = round(lat["v2"]["p95"] - lat["v1"]["p95"], 3)
    non_exact = (cols.bucket == PREFIX) | (cols.bucket == NOMATCH)
    med_prefix = float(np.median(cols.prefix[non_exact])) if non_exact.any() else None
    return Summary(
        rounds=n,
        parity_rounds=parity,
        counts=counts,
        exact_match_rate=_rate(counts["exact"], parity),
        exact_match_ci95=wilson(counts["exact"], parity),
        unreachable_rate={
            "v1": _rate(counts["v1-unreachable"] + both, n),
            "v2": _rate(counts["v2-unreachable"] + both, n),
        },
        latency_ms=lat,
        ttft_ms={s: percentiles(cols.ttft[s]) for s in SIDES},
        p95_gap_ms=gap,
        median_prefix_match_chars=med_prefix,
        by_category=_by_category(cols),
        top_divergent_prompts=_top_divergent(cols, non_exact, top),
        first_ts=float(cols.ts.min()) if n else None,
        last_ts=float(cols.ts.max()) if n else None,
    )


def _by_category(cols: Columns) -> dict[str, dict[str, Any]]:
    ncat = len(cols.categories)
    if not ncat:
        return {}
    table = np.zeros((ncat, len(BUCKETS)), dtype=np.int64)
    np.add.at(table, (cols.category, cols.bucket.astype(np.int64)), 1)
    out: dict[str, dict[str, Any]] = {}
    for i in sorted(range(ncat), key=lambda j: cols.categories[j]):
        row = {b: int(table[i, j]) for j, b in enumerate(BUCKETS)}
        parity = row["exact"] + row["prefix-only"] + row["no-match"]
        out[cols.categories[i]] = {
            "rounds": int(table[i].sum()),
            "parity_rounds": parity,
            "counts": row,
            "exact_match_rate": _rate(row["exact"], parity),
        }
    return out


def _top_divergent(cols: Columns, non_exact: np.ndarray, top: int) -> list[dict[str, Any]]:
    if not non_exact.any():
        return []
    parity_mask = cols.bucket <= NOMATCH
    div = np.bincount(cols.prompt[non_exact], minlength=len(cols.prompts))
    par = np.bincount(cols.prompt[parity_mask], minlength=len(cols.prompts))
    cat_of = np.zeros(len(cols.prompts), dtype=np.int64)
    cat_of[cols.prompt] = cols.category
    order = sorted(np.nonzero(div)[0], key=lambda i: (-int(div[i]), cols.prompts[i]))[:top]
    return [
        {"prompt_id": cols.prompts[i], "category": cols.categories[int(cat_of[i])],
         "divergent": int(div[i]), "parity_rounds": int(par[i])}
        for i in order
    ]
