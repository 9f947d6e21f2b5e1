"""``export --parquet DIR``: every shard's rounds as one Parquet file, for the engines
platform teams already run (DuckDB, Spark, Trino, BigQuery).

One row per round (all segments of a rotated log, oldest first), one column per figure
(:data:`COLUMNS`, documented in the README); reply texts only with ``texts``. The file
of shard ``a/burnin.jsonl`` is ``DIR/a__burnin.parquet``; each file carries the marker
``shadow-burnin: export`` in its key-value metadata, and an existing file is replaced only
when it carries that marker. Files are written beside their target and renamed into
place (``sidecars.atomic_path``): an export cut short leaves the old files whole.
"""

from __future__ import annotations

import math
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from shadow_burnin.config import Config
from shadow_burnin.core.records import RecordKind, record_kind
from shadow_burnin.errors import ConfigError
from shadow_burnin.io.log.logread import Window, iter_records
from shadow_burnin.io.log.logset import Shard
from shadow_burnin.io.log.sidecars import LogFiles, atomic_path

MARKER_KEY = b"shadow-burnin"
MARKER_VALUE = b"export"
BATCH = 25_000  # rows per record batch and Parquet row group (bounded memory)

# name, Arrow type name, what it is (the README's schema table is this list)
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("shard", "string", "the log: its path under the shards' common directory"),
    ("round", "int64", "round number (continues across rotated segments)"),
    ("ts", "timestamp[ms, UTC]", "when the round started"),
    ("source", "string", "run (the burn-in's prompts), mirror or legacy"),
    ("bucket", "string", "exact, prefix-only, no-match, v1-/v2-/both-unreachable, …"),
    ("prompt_id", "string", "the prompt's id"),
    ("category", "string", "the prompt's category"),
    ("prompt", "string", "the prompt's text (from the round, else the config's prompts "
     "by id; chat prompts as their messages' JSON; null when unknown)"),
    ("v1_latency_ms", "double", "v1's latency (null where v1 did not reply: unreachable "
     "or client-cancelled, as bench counts it)"),
    ("v1_ttft_ms", "double", "v1's time to first token (null as latency)"),
    ("v1_status", "int32", "v1's HTTP status"),
    ("v1_error_code", "string", "v1's error code (e.g. http-503, connection-refused)"),
    ("v1_completion_tokens", "int64", "v1's completion tokens"),
    ("v1_finish_reason", "string", "v1's finish reason"),
    ("v2_latency_ms", "double", "as v1_latency_ms, for v2"),
    ("v2_ttft_ms", "double", "as v1_ttft_ms, for v2"),
    ("v2_status", "int32", "as v1_status, for v2"),
    ("v2_error_code", "string", "as v1_error_code, for v2"),
    ("v2_completion_tokens", "int64", "as v1_completion_tokens, for v2"),
    ("v2_finish_reason", "string", "as v1_finish_reason, for v2"),
    ("prefix_match_chars", "int64", "characters both replies share from the start "
     "(null: exact or not compared)"),
    ("divergence_byte", "int64", "byte offset of the first difference (null: none)"),
    ("verdict", "string", "forensics verdict of a divergence (near-tie, regression, …)"),
    ("cause", "string", "forensics cause"),
    ("swing", "double", "forensics: probability swing at the divergent token"),
    ("divergence_token", "int64", "forensics: index of the first divergent token"),
    ("refire", "string", "re-fire outcome (reproducible, flaky, …)"),
    ("aa_target", "string", "A/A pair sent with this round: its target (v1, v1b)"),
    ("aa_bucket", "string", "A/A pair's bucket"),
    ("aa_prefix_match_chars", "int64", "A/A pair's shared prefix"),
    ("aa_divergence_byte", "int64", "A/A pair's first differing byte"),
    ("aa_swing", "double", "A/A pair's forensics swing"),
)
TEXT_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("v1_text", "string", "v1's reply (only with --texts)"),
    ("v2_text", "string", "v2's reply (only with --texts)"),
)


def output_name(shard: Shard) -> str:
    """``a/burnin.jsonl`` → ``a__burnin.parquet`` (one flat directory of files)."""
    name = shard.name[: -len(".jsonl")] if shard.name.endswith(".jsonl") else shard.name
    name = name.replace(os.sep, "__").replace("/", "__").lstrip(".") or "log"
    return f"{name}.parquet"


class Exported(msgspec.Struct):
    shard: Shard
    path: Path
    rows: int
    bytes: int


class ExportResult(msgspec.Struct):
    files: list[Exported] = msgspec.field(default_factory=list)
    notes: list[str] = msgspec.field(default_factory=list)


Progress = Callable[[Shard, int, int, int], None]  # shard, bytes read, bytes total, rows


def plan(out_dir: Path, shards: Sequence[Shard], families: Sequence[LogFiles],
         inputs: Sequence[Path] = ()) -> list[Path]:
    """The target of each shard, every one checked before anything is read: not a log
    or a side file of one, not an input, not a file this command did not write; two
    shards never share a target. ConfigError (exit 2) naming the path otherwise."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(out_dir, "--parquet: not a directory")
    targets = [out_dir / output_name(s) for s in shards]
    seen: dict[str, Shard] = {}
    for shard, target in zip(shards, targets, strict=True):
        key = os.path.realpath(target)
        if key in seen:
            raise ConfigError(target, f"shards {seen[key].name} and {shard.name} would both "
                              "be exported here; rename one")
        seen[key] = shard
        _guard(target, families, inputs)
    return targets


def _guard(target: Path, families: Sequence[LogFiles], inputs: Sequence[Path]) -> None:
    for files in families:
        if files.owns(target):
            raise ConfigError(target, f"refusing to write here: it is {files.log} or one of "
                              "its side files")
    real = os.path.realpath(target)
    if any(real == os.path.realpath(p) for p in inputs):
        raise ConfigError(target, "refusing to write over an input of this command")
    try:
        st = os.stat(target)
    except FileNotFoundError:
        return
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(target, "refusing to write here: not a regular file")
    if not carries_marker(target):
        raise ConfigError(target, "refusing to overwrite a file this command did not write "
                          "(no 'shadow-burnin: export' Parquet metadata); pick another "
                          "directory")


def carries_marker(path: Path) -> bool:
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    try:
        meta = pq.read_schema(path).metadata or {}
    except Exception:
        return False
    return meta.get(MARKER_KEY) == MARKER_VALUE


def prompt_texts(cfg: Config) -> dict[str, str]:
    """Prompt id → text from the config's prompts (or the built-in corpus)."""
    import orjson

    from shadow_burnin.app.burnin import load_prompts

    out = {}
    for p in load_prompts(cfg):
        if p.prompt is not None:
            out[p.id] = p.prompt
        elif p.messages is not None:
            out[p.id] = orjson.dumps([{"role": m.role, "content": m.content}
                                      for m in p.messages]).decode()
    return out


def export(shards: Sequence[Shard], targets: Sequence[Path], *, texts: bool = False,
           window: Window | None = None, prompts: dict[str, str] | None = None,
           progress: Progress | None = None) -> ExportResult:
    """Write each shard's rounds to its target (see :func:`plan`)."""
    result = ExportResult()
    for shard, target in zip(shards, targets, strict=True):
        target.parent.mkdir(parents=True, exist_ok=True)
        rows = _write_shard(shard, target, texts=texts, window=window, prompts=prompts or {},
                            progress=progress)
        result.files.append(Exported(shard, target, rows, target.stat().st_size))
    return result


def _schema(texts: bool) -> Any:
    import pyarrow as pa  # type: ignore[import-untyped]

    types = {"string": pa.string(), "int64": pa.int64(), "int32": pa.int32(),
             "double": pa.float64(), "timestamp[ms, UTC]": pa.timestamp("ms", tz="UTC")}
    cols = COLUMNS + (TEXT_COLUMNS if texts else ())
    fields = [pa.field(name, types[kind], metadata={b"doc": doc.encode()})
              for name, kind, doc in cols]
    return pa.schema(fields, metadata={MARKER_KEY: MARKER_VALUE})


def _write_shard(shard: Shard, target: Path, *, texts: bool, window: Window | None,
                 prompts: dict[str, str], progress: Progress | None) -> int:
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    schema = _schema(texts)
    total = sum(_size(p) for p in shard.segments())
    done = rows = 0
    with atomic_path(target) as tmp, pq.ParquetWriter(tmp, schema,
                                                       compression="zstd") as writer:
        for segment in shard.segments():
            size = _size(segment)
            held: list[dict[str, Any]] = []
            for record in _rounds(segment, window):
                held.append(record)
                if len(held) == BATCH:
                    writer.write_batch(_batch(held, schema, shard.name, texts, prompts))
                    rows += len(held)
                    held = []
                    if progress is not None:
                        progress(shard, done, total, rows)
            if held:
                writer.write_batch(_batch(held, schema, shard.name, texts, prompts))
                rows += len(held)
            done += size
            if progress is not None:
                progress(shard, done, total, rows)
    return rows


def _batch(records: list[dict[str, Any]], schema: Any, shard: str, texts: bool,
           prompts: dict[str, str]) -> Any:
    """One record batch: the fast path takes the values as the runner writes them and
    lets Arrow check their types; a batch holding anything else (a hand-edited or
    hostile log) is converted again value by value (wrong types become nulls)."""
    import pyarrow as pa  # type: ignore[import-untyped]

    try:
        return pa.record_batch(_fast(records, shard, texts, prompts, schema.names),
                               schema=schema)
    except (pa.ArrowException, AttributeError, KeyError, TypeError, ValueError,
            OverflowError):
        batch: dict[str, list[Any]] = {n: [] for n in schema.names}
        for record in records:
            _row(batch, shard, record, texts, prompts)
        return pa.record_batch(batch, schema=schema)


_SILENT = {"v1": frozenset({"v1-unreachable", "both-unreachable", "client-cancelled"}),
           "v2": frozenset({"v2-unreachable", "both-unreachable", "client-cancelled"})}


def _fast(records: list[dict[str, Any]], shard: str, texts: bool, prompts: dict[str, str],
          names: list[str]) -> dict[str, list[Any]]:
    c: dict[str, list[Any]] = {n: [] for n in names}
    none: dict[str, Any] = {}
    ts = c["ts"]
    for r in records:
        bucket = r["bucket"]
        fx = r.get("forensics") or none
        refire = r.get("refire") or none
        aa = r.get("aa") or none
        aa_fx = aa.get("forensics") or none
        pid = r.get("prompt_id")
        c["round"].append(r.get("round"))
        ts.append(r.get("ts"))
        c["source"].append(r.get("source") or "run")
        c["bucket"].append(bucket)
        c["prompt_id"].append(pid)
        c["category"].append(r.get("category"))
        c["prompt"].append(r.get("prompt") or (prompts.get(pid) if isinstance(pid, str)
                                                else None))
        c["prefix_match_chars"].append(r.get("prefix_match_chars"))
        c["divergence_byte"].append(r.get("divergence_byte"))
        c["verdict"].append(fx.get("verdict"))
        c["cause"].append(fx.get("cause"))
        c["swing"].append(fx.get("swing"))
        c["divergence_token"].append(fx.get("divergence_token"))
        c["refire"].append(refire.get("outcome"))
        c["aa_target"].append(aa.get("target"))
        c["aa_bucket"].append(aa.get("bucket"))
        c["aa_prefix_match_chars"].append(aa.get("prefix_match_chars"))
        c["aa_divergence_byte"].append(aa.get("divergence_byte"))
        c["aa_swing"].append(aa_fx.get("swing"))
        for side in ("v1", "v2"):
            s = r[side]
            replied = bucket not in _SILENT[side]
            c[f"{side}_latency_ms"].append(s.get("latency_ms") if replied else None)
            c[f"{side}_ttft_ms"].append(s.get("ttft_ms") if replied else None)
            c[f"{side}_status"].append(s.get("status"))
            error = s.get("error")
            c[f"{side}_error_code"].append(None if error is None else _code(error))
            c[f"{side}_completion_tokens"].append(s.get("completion_tokens"))
            c[f"{side}_finish_reason"].append(s.get("finish_reason"))
            if texts:
                c[f"{side}_text"].append(s.get("text"))
    c["shard"] = [shard] * len(records)
    c["ts"] = [_ts(t) for t in ts]
    if any(t is None for t in c["ts"]):
        raise ValueError("a round without a valid ts")
    for key in ("swing", "aa_swing", "v1_latency_ms", "v2_latency_ms", "v1_ttft_ms",
                "v2_ttft_ms"):  # bools are ints to Python: only numbers, as the slow path
        if any(v is not None and type(v) not in (int, float) for v in c[key]):
            raise TypeError(key)
    for key in ("round", "prefix_match_chars", "divergence_byte", "divergence_token",
                "aa_prefix_match_chars", "aa_divergence_byte", "v1_status", "v2_status",
                "v1_completion_tokens", "v2_completion_tokens"):
        if any(v is not None and type(v) is not int for v in c[key]):
            raise TypeError(key)
    return c


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _rounds(path: Path, window: Window | None) -> Iterator[dict[str, Any]]:
    for _n, _t, record in iter_records(path, window, split_aa=False):
        if record_kind(record) is RecordKind.ROUND:
            yield record


def _num(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        v = float(value)
        return v if math.isfinite(v) else None
    return None


def _int(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and -2**63 <= value < 2**63:
        return value
    return None


def _i32(value: Any) -> int | None:
    v = _int(value)
    return v if v is not None and -2**31 <= v < 2**31 else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _code(error: Any) -> str | None:
    """The error code of a side's error (``http-503: Service Unavailable`` → ``http-503``):
    the detail stays out (a server's echo could carry anything)."""
    if not isinstance(error, str):
        return None
    return error.split(":", 1)[0].strip()[:64] or None


def _ts(text: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        return None


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _row(batch: dict[str, list[Any]], shard: str, r: dict[str, Any], texts: bool,
         prompts: dict[str, str]) -> None:
    fx, refire, aa = _obj(r.get("forensics")), _obj(r.get("refire")), _obj(r.get("aa"))
    aa_fx = _obj(aa.get("forensics"))
    pid = _str(r.get("prompt_id"))
    prompt = _str(r.get("prompt")) or (prompts.get(pid) if pid is not None else None)
    put = {
        "shard": shard, "round": _int(r.get("round")), "ts": _ts(r.get("ts")),
        "source": _str(r.get("source")) or "run", "bucket": _str(r.get("bucket")),
        "prompt_id": pid, "category": _str(r.get("category")), "prompt": prompt,
        "prefix_match_chars": _int(r.get("prefix_match_chars")),
        "divergence_byte": _int(r.get("divergence_byte")),
        "verdict": _str(fx.get("verdict")), "cause": _str(fx.get("cause")),
        "swing": _num(fx.get("swing")), "divergence_token": _int(fx.get("divergence_token")),
        "refire": _str(refire.get("outcome")),
        "aa_target": _str(aa.get("target")), "aa_bucket": _str(aa.get("bucket")),
        "aa_prefix_match_chars": _int(aa.get("prefix_match_chars")),
        "aa_divergence_byte": _int(aa.get("divergence_byte")),
        "aa_swing": _num(aa_fx.get("swing")),
    }
    for side in ("v1", "v2"):
        s = _obj(r.get(side))
        replied = put["bucket"] not in (f"{side}-unreachable", "both-unreachable",
                                        "client-cancelled")  # as bench counts them
        put[f"{side}_latency_ms"] = _num(s.get("latency_ms")) if replied else None
        put[f"{side}_ttft_ms"] = _num(s.get("ttft_ms")) if replied else None
        put[f"{side}_status"] = _i32(s.get("status"))
        put[f"{side}_error_code"] = _code(s.get("error"))
        put[f"{side}_completion_tokens"] = _int(s.get("completion_tokens"))
        put[f"{side}_finish_reason"] = _str(s.get("finish_reason"))
        if texts:
            put[f"{side}_text"] = _str(s.get("text"))
    for name, column in batch.items():
        column.append(put[name])


def plan_export(cfg: Config, specs: Sequence[str | Path], out_dir: Path
                ) -> tuple[list[Shard], list[Path]]:
    """The shards ``--log`` names and each one's target in ``out_dir``, all checked."""
    from shadow_burnin.app.files import inputs_of
    from shadow_burnin.app.logset import family, shards_of

    shards = shards_of(cfg, specs)
    return shards, plan(out_dir, shards, family(cfg, shards), inputs_of(cfg))


def export_logs(cfg: Config, shards: Sequence[Shard], targets: Sequence[Path], *,
                texts: bool = False, window: Window | None = None,
                progress: Progress | None = None) -> ExportResult:
    """:func:`export` with the prompt texts of the config's prompts (or the built-in
    corpus) joined by prompt id (an unreadable prompts file only costs that column, with
    a note)."""
    from shadow_burnin.errors import ShadowBurninError

    notes = []
    try:
        prompts = prompt_texts(cfg)
    except ShadowBurninError as exc:
        prompts = {}
        notes.append(f"prompt texts not joined (column 'prompt' empty): {exc}")
    result = export(shards, targets, texts=texts, window=window, prompts=prompts,
                    progress=progress)
    result.notes.extend(notes)
    return result
