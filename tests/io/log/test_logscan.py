"""The fast log reader (msgspec rows, blocks, byte ranges) against the reference fold."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shadow_burnin.core.aa import summarise_aa
from shadow_burnin.core.columns import ColumnBuilder, Columns, concat_columns, epoch_seconds
from shadow_burnin.core.records import BUCKETS, aa_records
from shadow_burnin.core.sidetables import summarise_aa_table
from shadow_burnin.core.tokstats import FIELDS
from shadow_burnin.errors import LogError
from shadow_burnin.io.log import logread, logscan
from shadow_burnin.io.log.logread import scan

T0 = datetime(2026, 11, 27, 23, 0, tzinfo=UTC)


ERRORS = ["connection-refused: x", "http-503: Service Unavailable", "timeout", None, "",
          "<b>x</b>: y", ": no code", 7, "x" * 80 + ": long"]
STATUSES = [None, 503, "503", True, 10**12, -1, 500, 32768, 32767]
TOKENS = [3, None, 12, 2.5, "x", False, 2**63 - 1, 1e300]


def _variety(rng: np.random.Generator) -> np.random.Generator:
    """A generator seeded from ``rng``'s state without drawing from it (the logs other
    tests generate stay as they were)."""
    return np.random.default_rng(rng.bit_generator.state["state"]["state"] % 2**63)


def side(rng: np.random.Generator, ok: bool) -> dict[str, Any]:
    """One side as logged: status, error and completion tokens of every shape a log
    (or a hand-edited one) may hold, of the expected type or not."""
    more = _variety(rng)
    if not ok:
        out: dict[str, Any] = {"text": None, "latency_ms": 3.5, "ttft_ms": None,
                               "status": STATUSES[more.integers(len(STATUSES))],
                               "error": ERRORS[more.integers(len(ERRORS))]}
        if more.random() < 0.1:
            del out["status"], out["error"]
        return out
    text = rng.choice(["Paris", "a\nb\n", "日本🙂", "", '"text":null', "x" * 50])
    out = {"text": str(text), "latency_ms": float(rng.uniform(1, 900)),
           "ttft_ms": None if rng.random() < 0.2 else float(rng.uniform(1, 50)),
           "status": 200 if more.random() < 0.8 else [201, None, 10**12][more.integers(3)],
           "finish_reason": "stop",
           "completion_tokens": 3 if more.random() < 0.6 else TOKENS[more.integers(7)],
           "error": None}
    if more.random() < 0.05:
        del out["completion_tokens"]
    return out


def record(rng: np.random.Generator, n: int, events: bool = True) -> dict[str, Any]:
    """A round of any shape the runner writes, or an A/A or event record."""
    roll = rng.random()
    if roll < 0.08:
        return {"kind": "aa", "schema": 1, "round": n, "ts": stamp(n), "prompt_id": "p1",
                "category": "code", "target": "v1", "bucket": "no-match",
                "prefix_match_chars": 3, "a": side(rng, True), "b": side(rng, True),
                "forensics": {"verdict": "near-tie", "swing": float(rng.uniform(0, .2))},
                "noise": {"moves": [float(rng.uniform(0, .1))], "drifts": [0.01, 0.02]}}
    if roll < 0.1 and events:
        return {"kind": "event", "event": "halt", "ts": stamp(n), "reason": "no-match"}
    bucket = str(rng.choice(BUCKETS))
    rec: dict[str, Any] = {
        "schema": 1, "round": n, "ts": stamp(n), "prompt_id": f"p{rng.integers(9)}",
        "category": str(rng.choice(["code", "poems", "日本語"])), "bucket": bucket,
        "divergence_byte": None, "prefix_match_chars": None if rng.random() < .3 else 4,
        "v1": side(rng, bucket not in ("v1-unreachable", "both-unreachable")),
        "v2": side(rng, bucket not in ("v2-unreachable", "both-unreachable"))}
    if rng.random() < 0.2:
        rec["forensics"] = {"verdict": "near-tie", "divergence_token": int(rng.integers(5))}
    if rng.random() < 0.1:
        rec["refire"] = {"outcome": "flaky-v2"}
    if rng.random() < 0.3:  # token statistics: numbers, nulls, a field missing
        stats: dict[str, Any] = {k: float(rng.uniform(0, 3)) for k in FIELDS}
        stats["n"], stats["div_swing"] = int(rng.integers(30)), None
        stats.pop("k")
        rec["tokstats"] = stats
    if rng.random() < 0.05:
        rec["source"] = "legacy"
    if rng.random() < 0.05:
        rec["v2"]["error"] = "stream-cut: x"  # partial text kept, not a reply
    if rng.random() < 0.1:  # this version's layout: the A/A pair inside its round
        rec["aa"] = {"ts": stamp(n), "target": "v1b", "bucket": "exact",
                     "prefix_match_chars": 3, "a": side(rng, True), "b": side(rng, True),
                     "noise": {"moves": [float(rng.uniform(0, .1))], "drifts": [0.0]}}
    if rng.random() < 0.05:
        del rec["category"]
    return rec


def stamp(n: int) -> str:
    return (T0 + timedelta(seconds=n * 2.5)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def write_log(path: Path, seed: int, n: int, blanks: bool = False, events: bool = True
              ) -> list[bytes]:
    rng = np.random.default_rng(seed)
    lines = [orjson.dumps(record(rng, i, events)) for i in range(1, n + 1)]
    if blanks:
        lines[n // 2: n // 2] = [b"", b"  "]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return lines


def reference(lines: list[bytes]) -> tuple[Columns, list[dict[str, Any]]]:
    builder, other = ColumnBuilder(), []
    records = [orjson.loads(x) for x in lines if x.strip()]
    builder.add_all(r for r in records if r.get("kind") in (None, "round"))
    other = []
    for r in records:  # in log order; a pair inside its round comes right after it
        if r.get("kind") not in (None, "round"):
            other.append(r)
        elif "aa" in r:
            other.append({"kind": "aa", **{k: r[k] for k in ("schema", "round", "prompt_id",
                                                             "category") if k in r},
                          **r["aa"]})
    return builder.build(), [without_replies(r) for r in other]


def without_replies(record: dict[str, Any]) -> dict[str, Any]:
    """What scans hand on of an A/A record: everything a report reads, not the replies."""
    if record["kind"] != "aa":
        return record
    keep = ("kind", "schema", "round", "ts", "prompt_id", "category", "target", "bucket",
            "forensics", "noise")  # all but the replies and what no report reads
    missing = {"category": "", "prompt_id": ""}
    return {k: record.get(k, missing.get(k)) for k in keep}


def assert_same(a: Columns, b: Columns) -> None:
    assert len(a) == len(b)
    for name in ("bucket", "prefix", "ts"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    for s in ("v1", "v2"):
        np.testing.assert_array_equal(a.latency[s], b.latency[s])
        np.testing.assert_array_equal(a.ttft[s], b.ttft[s])
    assert [a.categories[i] for i in a.category] == [b.categories[i] for i in b.category]
    assert [a.prompts[i] for i in a.prompt] == [b.prompts[i] for i in b.prompt]
    assert a.extra.keys() == b.extra.keys()
    for k in a.extra:
        np.testing.assert_array_equal(a.extra[k], b.extra[k])
    assert a.tokstats.keys() == b.tokstats.keys()
    for k in a.tokstats:
        assert a.tokstats[k].dtype == b.tokstats[k].dtype == np.float32
        np.testing.assert_array_equal(a.tokstats[k], b.tokstats[k])
    for s in ("v1", "v2"):
        assert a.status[s].dtype == b.status[s].dtype == np.int16
        np.testing.assert_array_equal(a.status[s], b.status[s])
        assert a.completion_tokens[s].dtype == b.completion_tokens[s].dtype == np.float32
        np.testing.assert_array_equal(a.completion_tokens[s], b.completion_tokens[s])
        assert [a.errors[i] if i >= 0 else None for i in a.error[s]] == \
            [b.errors[i] if i >= 0 else None for i in b.error[s]]


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 120), block=st.integers(64, 4096),
       blanks=st.booleans(), events=st.booleans(), cuts=st.lists(st.floats(0, 1), max_size=3))
def test_fast_path_equals_reference_for_any_blocks_and_ranges(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int, n: int, block: int,
        blanks: bool, events: bool, cuts: list[float]) -> None:
    log = tmp_path / f"log-{seed}-{n}.jsonl"
    lines = write_log(log, seed, n, blanks, events)
    want, want_other = reference(lines)
    monkeypatch.setattr(logscan, "BLOCK_BYTES", block)
    size = log.stat().st_size
    bounds = sorted({int(c * size) for c in cuts} - {0, size})
    starts, ends = [0, *bounds], [*bounds, None]
    parts = [logscan.scan_range(log, s, e) for s, e in zip(starts, ends, strict=True)]
    assert_same(concat_columns([p[0] for p in parts]), want)
    assert [r for p in parts for r in p[1]] == want_other
    assert sum(p[2] for p in parts) == sum(
        1 for x in lines if x.strip() and orjson.loads(x).get("source") == "legacy")


def test_a_torn_last_line_is_not_a_round(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    lines = write_log(log, 1, 30)
    with log.open("ab") as fh:
        fh.write(lines[3][:40])
    assert_same(logscan.scan_range(log, 0, None)[0], reference(lines)[0])


@pytest.mark.parametrize(("bad", "message"), [
    (b"{not json", "line is not JSON"),
    (b"[1, 2]", "line is not a JSON object"),
    (b'{"schema": 2, "ts": "2026-11-27T23:00:00.000Z", "bucket": "exact"}',
     "not a shadow-burnin round record"),
    (b'{"schema": 1, "ts": "2026-11-27T23:00:00.000Z", "bucket": "exact"}',
     "not a shadow-burnin round record (fields)"),
    (b'{"schema": 1, "ts": "yesterday", "bucket": "exact", "v1": {"text": "a"}, '
     b'"v2": {"text": "a"}}', "record has no valid 'ts'"),
])
@pytest.mark.parametrize("parallel", [False, True])
def test_a_bad_line_deep_in_the_log_is_named_by_its_number(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bad: bytes, message: str,
        parallel: bool) -> None:
    log = tmp_path / "log.jsonl"
    lines = write_log(log, 2, 200)
    lines[150] = bad
    log.write_bytes(b"\n".join(lines) + b"\n")
    monkeypatch.setattr(logscan, "BLOCK_BYTES", 1000)  # the bad line is blocks away
    if parallel:  # byte ranges in worker processes: the bad line is in the second one
        monkeypatch.setattr(logread, "PARALLEL_MIN_BYTES", 0)
        monkeypatch.setattr(os, "cpu_count", lambda: 2)
    with pytest.raises(LogError) as err:
        scan(log)
    assert str(err.value).endswith(f"log.jsonl:151: {message}")


def test_a_field_of_another_type_falls_back_to_the_reference(tmp_path: Path) -> None:
    """A latency written as an int, a null category: decoded line by line, same figures."""
    log = tmp_path / "log.jsonl"
    lines = write_log(log, 3, 40)
    rec = orjson.loads(lines[5])
    rec.update(kind="round", bucket="exact", prefix_match_chars=7)
    rec["v1"].update(latency_ms=812, text="ok", error=None)
    lines[5] = orjson.dumps(rec)
    log.write_bytes(b"\n".join(lines) + b"\n")
    got, other, _ = logscan.scan_range(log, 0, None)
    want, want_other = reference(lines)
    assert_same(got, want)
    assert other == want_other and any(r["kind"] == "aa" for r in other)
    assert 812.0 in got.latency["v1"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1)),
                min_size=1, max_size=20))
def test_epoch_seconds_fast_path_equals_the_general_parse(stamps: list[datetime]) -> None:
    text = [d.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z" for d in stamps]
    want = [d.replace(microsecond=d.microsecond // 1000 * 1000, tzinfo=UTC).timestamp()
            for d in stamps]
    np.testing.assert_array_equal(epoch_seconds(text), np.array(want))


def test_epoch_seconds_other_shapes_still_parse() -> None:
    got = epoch_seconds(["2026-11-27T23:00:01Z", "2026-11-27T23:00:01.5+00:00",
                         "2026-11-27T23:00:01.250Z"])
    base = datetime(2026, 11, 27, 23, 0, 1, tzinfo=UTC).timestamp()
    np.testing.assert_array_equal(got, [base, base + 0.5, base + 0.25])


def test_bench_a_a_figures_are_those_of_the_whole_records(tmp_path: Path) -> None:
    """The A/A records a scan hands on (without replies) give the figures of the full ones."""
    log = tmp_path / "log.jsonl"
    lines = write_log(log, 5, 400)
    full = list(aa_records(list(map(orjson.loads, lines))))  # both layouts
    scanned = scan(log, use_index=False)
    assert len(full) > 10
    assert (summarise_aa(scanned.other, 90, 100).to_json()
            == summarise_aa(full, 90, 100).to_json())
    indexed = scan(log, use_index=True)  # the index's A/A table: the same figures
    assert indexed.aa is not None
    assert (summarise_aa_table(indexed.aa, 90, 100).to_json()
            == summarise_aa(full, 90, 100).to_json())


@pytest.mark.parametrize("bucket", ["v2-unreachable", "v1-unreachable", "both-unreachable",
                                    "no-match"])
def test_a_sides_figures_count_only_where_its_bucket_says_it_replied(
        tmp_path: Path, bucket: str) -> None:
    rec = {"schema": 1, "round": 1, "ts": stamp(1), "prompt_id": "p", "category": "c",
           "bucket": bucket, "prefix_match_chars": 0,
           "v1": {"text": "a", "latency_ms": 10.0, "ttft_ms": 1.0, "error": None},
           "v2": {"text": None, "latency_ms": 20.0, "ttft_ms": 2.0, "error": "timeout"}}
    log = tmp_path / "log.jsonl"
    log.write_bytes(orjson.dumps(rec) + b"\n")
    fast = logscan.scan_range(log, 0, None)[0]
    ref = ColumnBuilder()
    ref.add_all([rec])
    for cols in (fast, ref.build()):
        for side, latency, ttft in (("v1", 10.0, 1.0), ("v2", 20.0, 2.0)):
            replied = bucket not in (f"{side}-unreachable", "both-unreachable")
            got = (cols.latency[side][0], cols.ttft[side][0])
            assert got == (latency, ttft) if replied else np.isnan(got).all()
