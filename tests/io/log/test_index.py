"""The round index (``<log>.idx``): the same columns as a scan of the log, caught up
incrementally, rebuilt (with a note) when stale, corrupt or from another log."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shadow_burnin.cli import cli
from shadow_burnin.core.runverdict import flip_of
from shadow_burnin.core.sidetables import AATable, FlipTable, aa_table, flip_table
from shadow_burnin.io.log import index as index_mod
from shadow_burnin.io.log import logscan
from shadow_burnin.io.log.index import CorruptIndex, decode, encode, load
from shadow_burnin.io.log.logread import Window, scan
from shadow_burnin.io.log.sidecars import index_path
from shadow_burnin.io.log.store import Store
from tests.io.log.test_logscan import assert_same, record, reference, stamp, write_log


def rebuilt(log: Path) -> index_mod.Index:
    return load(log, save=False) if not index_path(log).exists() else _fresh(log)


def _fresh(log: Path) -> index_mod.Index:
    saved = index_path(log).read_bytes()
    index_path(log).unlink()
    try:
        return load(log, save=False)
    finally:
        index_path(log).write_bytes(saved)


def assert_tables_equal(a: Any, b: Any, fields: tuple[str, ...]) -> None:
    for name in fields:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def assert_aa_equal(a: AATable, b: AATable) -> None:
    assert_tables_equal(a, b, (*AATable.ROW_FIELDS, "moves", "drifts"))
    assert [a.labels[i] for i in a.label if i >= 0] == [b.labels[i] for i in b.label if i >= 0]


def assert_index_equal(a: index_mod.Index, b: index_mod.Index) -> None:
    assert_same(a.columns, b.columns)
    np.testing.assert_array_equal(a.offset, b.offset)
    np.testing.assert_array_equal(a.length, b.length)
    assert a.other == b.other and a.imported == b.imported and a.covered == b.covered
    assert_aa_equal(a.aa, b.aa)
    assert_tables_equal(a.flips, b.flips, FlipTable.FIELDS)
    np.testing.assert_array_equal(a.rounds, b.rounds)


def split_reference(other: list[dict[str, Any]]) -> tuple[AATable, list[dict[str, Any]]]:
    """The reference's other records as the index keeps them: A/A table, events."""
    return (aa_table([r for r in other if r.get("kind") == "aa"]),
            [r for r in other if r.get("kind") != "aa"])


def reference_flips(lines: list[bytes]) -> FlipTable:
    rounds = [r for r in map(orjson.loads, filter(bytes.strip, lines))
              if r.get("kind") in (None, "round")]
    return flip_table((i, f) for i, r in enumerate(rounds) if r["bucket"] == "no-match"
                      and (f := flip_of(r.get("forensics"), r.get("refire"))) is not None)


def check_offsets(log: Path, idx: index_mod.Index) -> None:
    """Each round's offset/length is its line: it decodes to that round."""
    data = log.read_bytes()
    for i, (at, n) in enumerate(zip(idx.offset, idx.length, strict=True)):
        assert data[at + n:at + n + 1] == b"\n"
        record = orjson.loads(data[at:at + n])
        assert record.get("kind") in (None, "round")
        assert idx.rounds[i] == record.get("round", 0)
        assert idx.columns.ts[i] == pytest.approx(
            np.datetime64(record["ts"][:-1]).astype("datetime64[us]").astype(np.int64) / 1e6)


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 90), block=st.integers(64, 4096),
       blanks=st.booleans(), events=st.booleans(), split=st.floats(0, 1))
def test_index_grown_in_steps_equals_the_reference_and_points_at_each_round(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int, n: int, block: int,
        blanks: bool, events: bool, split: float) -> None:
    monkeypatch.setattr(logscan, "BLOCK_BYTES", block)
    log = Path(tempfile.mkdtemp(dir=tmp_path)) / "log.jsonl"
    lines = write_log(log, seed, n, blanks, events)
    data = log.read_bytes()
    cut = data.rfind(b"\n", 0, int(len(data) * split)) + 1
    part = data[:cut] + data[cut:][:7]  # a first part, and a torn line
    log.write_bytes(part)
    first = load(log)
    assert first.covered == part.rfind(b"\n") + 1
    assert index_path(log).exists() == (first.covered > 0)
    log.write_bytes(data)  # the log grew: only the new bytes are folded
    grown = load(log)
    assert not grown.notes
    want, want_other = reference(lines)
    assert_same(grown.columns, want)
    want_aa, want_events = split_reference(want_other)
    assert grown.other == want_events
    assert_aa_equal(grown.aa, want_aa)
    assert_tables_equal(grown.flips, reference_flips(lines), FlipTable.FIELDS)
    check_offsets(log, grown)
    assert_index_equal(load(log), grown)  # read back from the file as saved


def test_the_saved_index_is_read_without_the_log_being_parsed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "a.jsonl"
    write_log(log, 7, 200)
    built = load(log)

    def fail(*_a: object, **_k: object) -> None:
        raise AssertionError("the log was parsed")

    monkeypatch.setattr(logscan, "scan_range_at", fail)  # (imported where it is used)
    monkeypatch.setattr(logscan, "scan_range", fail)
    assert_index_equal(load(log), built)


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "other-log", "rewritten"])
def test_a_stale_or_corrupt_index_is_rebuilt_with_a_note(tmp_path: Path, damage: str) -> None:
    log = tmp_path / "a.jsonl"
    write_log(log, 3, 150)
    good = load(log)
    idx = index_path(log)
    raw = bytearray(idx.read_bytes())
    if damage == "truncate":
        idx.write_bytes(raw[:len(raw) // 2])
    elif damage == "flip":
        raw[-5] ^= 0xFF
        idx.write_bytes(raw)
    elif damage == "garbage":
        idx.write_bytes(b"not an index at all")
    elif damage == "other-log":
        other = tmp_path / "b.jsonl"
        write_log(other, 4, 300)
        load(other)
        index_path(other).replace(idx)
    else:  # the log rewritten in place, same length
        data = log.read_bytes()
        i = data.rfind(b'"round":')
        log.write_bytes(data[:i] + data[i:].replace(b'"round":1', b'"round":9', 1))
        good = _fresh(log)
    again = load(log)
    assert again.notes and "rebuilt" in again.notes[0]
    assert_index_equal(again, good)
    assert not load(log).notes  # the rebuilt index was saved and now matches


def test_decode_refuses_what_encode_did_not_write(tmp_path: Path) -> None:
    log = tmp_path / "a.jsonl"
    write_log(log, 5, 40)
    data = encode(load(log))
    assert_index_equal(decode(data), load(log))
    for bad in (data[:-1], b"SBIDX1\n" + b"\xff" * 8, data[:20], b"SBX2" + data[4:-1]):
        with pytest.raises(CorruptIndex):
            decode(bad)
    # bytes after a whole segment are a torn append: ignored, the chain ends before them
    assert_index_equal(decode(data + b"x"), decode(data))


def test_scan_through_the_index_equals_the_plain_scan_with_a_window(tmp_path: Path) -> None:
    log = tmp_path / "a.jsonl"
    write_log(log, 11, 300)
    win = Window(np.datetime64(stamp(40)[:-1]).astype("datetime64[ms]").astype(float) / 1e3,
                 np.datetime64(stamp(200)[:-1]).astype("datetime64[ms]").astype(float) / 1e3)
    for w in (None, win):
        a, b = scan(log, w, use_index=True), scan(log, w, use_index=False)
        assert_same(a.columns, b.columns)
        want_aa, want_events = split_reference(b.other)
        assert a.other == want_events and a.notes == b.notes
        assert a.aa is not None and b.aa is None
        assert_aa_equal(a.aa, want_aa)


def bench_json(log: Path, index: str, *extra: str) -> bytes:
    result = CliRunner().invoke(cli, ["bench", "--log", str(log), "--json", *extra],
                                env={"SHADOW_BURNIN_INDEX": index}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout_bytes


@settings(max_examples=8, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 150))
def test_bench_json_is_identical_with_and_without_the_index(
        tmp_path: Path, seed: int, n: int) -> None:
    log = Path(tempfile.mkdtemp(dir=tmp_path)) / "log.jsonl"
    write_log(log, seed, n, events=False)
    plain = bench_json(log, "off")
    assert not index_path(log).exists()
    cold = bench_json(log, "on")
    assert index_path(log).exists()
    assert bench_json(log, "on") == cold == plain
    since = ["--since", stamp(n // 3)]
    assert bench_json(log, "on", *since) == bench_json(log, "off", *since)
    # the per-side error-code breakdown of unreachable rounds, counted from the lines
    records = [orjson.loads(x) for x in log.read_bytes().splitlines()]
    want: dict[str, dict[str, int]] = {"v1": {}, "v2": {}}
    for r in records:
        if r.get("kind") not in (None, "round"):
            continue
        for s in ("v1", "v2"):
            if r["bucket"] in (f"{s}-unreachable", "both-unreachable"):
                err = r[s].get("error")
                code = (err.split(":", 1)[0].strip()[:64] if isinstance(err, str) else "") \
                    or "unknown"
                want[s][code] = want[s].get(code, 0) + 1
    got = orjson.loads(cold)["unreachable_errors"]
    assert {s: dict(c) for s, c in got.items()} == want
    for counts in got.values():  # most frequent first, ties by code
        assert list(counts.items()) == sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def test_a_file_that_is_not_a_log_is_refused_and_gets_no_index(tmp_path: Path) -> None:
    for name, body in (("text.jsonl", b"hello, no newline"), ("lines.jsonl", b"a\nb\n"),
                       ("json.jsonl", b'{"x": 1}\n')):
        path = tmp_path / name
        path.write_bytes(body)
        result = CliRunner().invoke(cli, ["bench", "--log", str(path), "--json"])
        assert result.exit_code == 2 and name in result.output
        assert len(result.output.strip().splitlines()) == 1
        assert not index_path(path).exists()


def _store_rounds(log: Path, seed: int, n: int, batch: int) -> list[dict[str, Any]]:
    """Commit ``n`` generated rounds through the store, ``batch`` per commit, the index
    appending a segment at every commit (its batch set to one round)."""

    rng = np.random.default_rng(seed)
    records = []
    while len(records) < n:
        r = record(rng, len(records) + 1, events=False)
        if r.get("kind") is None:
            records.append(r)
    saved, index_mod.BATCH_ROUNDS = index_mod.BATCH_ROUNDS, 1
    try:
        with Store(log, log.with_suffix(".state")) as store:
            for i in range(0, n, batch):
                store.append_many(records[i:i + batch])
    finally:
        index_mod.BATCH_ROUNDS = saved
    return records


def test_the_store_appends_one_segment_per_commit_equal_to_a_rebuild(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_mod, "BATCH_ROUNDS", 1)  # a segment at every commit
    log = tmp_path / "a.jsonl"
    _store_rounds(log, 3, 60, 7)
    raw = index_path(log).read_bytes()
    on_disk = decode(raw)
    assert on_disk.segments == 9 and on_disk.covered == log.stat().st_size
    assert_index_equal(on_disk, _fresh(log))
    check_offsets(log, on_disk)
    # the file grows by a segment, never rewritten: the old bytes stay as they were
    with Store(log, log.with_suffix(".state")) as store:
        store.append_many([orjson.loads(log.read_bytes().splitlines()[-1])
                           | {"round": 61}])
    assert index_path(log).read_bytes().startswith(raw)
    assert decode(index_path(log).read_bytes()).segments == 10


@pytest.mark.parametrize("with_stats", [[1], [0], [0, 2]], ids=["later", "first", "gaps"])
def test_commits_with_and_without_token_statistics_chain(
        tmp_path: Path, with_stats: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    """Only rounds with logprobs carry ``tokstats``: a commit without any has no such
    columns; the chain still reads whole (NaN there), equal to a rebuild."""
    monkeypatch.setattr(index_mod, "BATCH_ROUNDS", 1)  # a segment at every commit
    from shadow_burnin.core.tokstats import FIELDS

    log = tmp_path / "a.jsonl"
    rng = np.random.default_rng(5)
    records: list[dict[str, Any]] = []
    while len(records) < 24:
        r = record(rng, len(records) + 1, events=False)
        if r.get("kind") is None:
            r.pop("tokstats", None)
            records.append(r)
    batches = [records[i:i + 8] for i in range(0, 24, 8)]
    for b in with_stats:
        for j, r in enumerate(batches[b]):
            r["tokstats"] = {name: float(j + k) for k, name in enumerate(FIELDS)}
    with Store(log, log.with_suffix(".state")) as store:
        for batch in batches:
            store.append_many(batch)
    on_disk = decode(index_path(log).read_bytes())
    assert on_disk.segments == 3 and len(on_disk.columns) == 24
    assert_index_equal(on_disk, _fresh(log))
    got = on_disk.columns.tokstats[FIELDS[1]]
    want = [float(j + 1) if i // 8 in with_stats else math.nan
            for i, j in enumerate(list(range(8)) * 3)]
    assert np.array_equal(got, np.array(want, np.float32), equal_nan=True)


def test_a_torn_last_segment_is_ignored_and_caught_up_from_the_log(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "a.jsonl"
    _store_rounds(log, 4, 30, 4)
    idx = index_path(log)
    full = decode(idx.read_bytes())
    idx.write_bytes(idx.read_bytes()[:-9])  # a kill -9 inside the last append
    torn = decode(idx.read_bytes())
    assert torn.covered < full.covered and torn.segments == full.segments - 1
    caught = load(log)
    assert not caught.notes  # stale, not corrupt: caught up, no rebuild
    assert_index_equal(caught, full)
    assert decode(idx.read_bytes()).segments == 1  # saved as one segment


def test_many_segments_are_merged_by_a_reader_that_may_save(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_mod, "MAX_SEGMENTS", 5)
    log = tmp_path / "a.jsonl"
    _store_rounds(log, 5, 20, 2)
    assert decode(index_path(log).read_bytes()).segments == 10
    kept = load(log, save=False)
    assert kept.segments == 10
    merged = load(log)
    assert decode(index_path(log).read_bytes()).segments == 1
    assert_index_equal(merged, kept)
    assert_index_equal(decode(index_path(log).read_bytes()), _fresh(log))


def test_show_recent_and_divergences_read_rounds_at_their_offsets(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the index saved, finding a round or the divergence rows reads only their
    lines: the same answers as the scan of the whole log, which is then never run."""
    from shadow_burnin.app import divergences
    from shadow_burnin.io.log import logread

    log = tmp_path / "a.jsonl"
    write_log(log, 21, 400, events=False)
    records = [{"category": "none", **r} for r in map(orjson.loads, log.read_bytes(
    ).splitlines()) if r.get("kind") is None]  # rows name a category
    log.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    cases: list[dict[str, Any]] = [
        {}, {"limit": 5}, {"verdict": "near-tie", "limit": 3}, {"category": "code"},
        {"window": Window(None, np.datetime64(stamp(150)[:-1]).astype(
            "datetime64[ms]").astype(float) / 1e3)}]
    want_rows = []
    for kw in cases:
        monkeypatch.setattr(logread, "indexed", lambda _p: None)  # the old way: a scan
        want_rows.append(divergences.divergence_rows(log, **kw))
        monkeypatch.undo()
    load(log)

    def no_scan(*_a: object, **_k: object) -> None:
        raise AssertionError("the whole log was read")

    monkeypatch.setattr(logread, "iter_rounds", no_scan)
    monkeypatch.setattr(divergences, "iter_records", no_scan)
    for r in (records[0], records[137], records[-1]):
        assert logread.find_round(log, r["round"]) == r
    assert logread.find_round(log, 10_000) is None
    assert logread.last_rounds(log, 3) == records[-3:]
    assert logread.last_rounds(log, 10_000) == records
    for kw, want in zip(cases, want_rows, strict=True):
        assert divergences.divergence_rows(log, **kw) == want, kw
    assert want_rows[0]  # the log has divergences to find


def test_an_index_without_a_column_this_version_keeps_is_rebuilt_with_a_note(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "a.jsonl"
    write_log(log, 9, 50)
    want = load(log)
    real = index_mod._arrays
    monkeypatch.setattr(index_mod, "_arrays",
                        lambda idx: [a for a in real(idx) if a[0] != "@round"])
    index_path(log).write_bytes(encode(want))  # as an older version wrote it
    monkeypatch.undo()
    again = load(log)
    assert again.notes and "rebuilt" in again.notes[0]
    assert_index_equal(again, want)


def _as_previous_version(data: bytes) -> bytes:
    """A one-segment index as the version before per-side status, error codes and
    completion tokens wrote it: the same file without those columns and fields (its
    checksum recomputed, so only the layout differs)."""
    from shadow_burnin.io.log.indexcheck import HEAD as head
    from shadow_burnin.io.log.indexcheck import MAGIC, checksum

    _magic, hlen, _blen, _sum = head.unpack_from(data, 0)
    header = orjson.loads(data[head.size:head.size + hlen])
    new = ("status", "completion_tokens", "error", "errors")
    header["fields"] = [f for f in header["fields"] if f not in new]
    header.pop("err")
    body_at = head.size + hlen
    counts = {"r": header["n"], "a": header["na"], "f": header["nf"], "v": header["nv"],
              "v2": header["nv2"]}
    chunks, layout = [], []
    at = body_at
    for name, dtype, table in header["cols"]:
        size = np.dtype(dtype).itemsize * counts[table]
        size += -size % 8
        if name.split(".")[0] not in new:
            chunks.append(data[at:at + size])
            layout.append([name, dtype, table])
        at += size
    header["cols"] = layout
    raw = orjson.dumps(header)
    raw += b" " * (-(len(raw) + head.size) % 8)
    body = b"".join(chunks)
    return head.pack(MAGIC, len(raw), len(body), checksum(raw, body)) + raw + body


def test_an_index_of_the_previous_version_is_detected_and_rebuilt_with_a_note(
        tmp_path: Path) -> None:
    """An index written before status/error code/completion tokens were columns: its
    layout differs, so it is rebuilt from the log (with a note), never read as is."""
    log = tmp_path / "a.jsonl"
    write_log(log, 11, 120)
    want = load(log)
    assert any(want.columns.errors) and (want.columns.status["v1"] == 200).any()
    old = _as_previous_version(index_path(log).read_bytes())
    with pytest.raises(CorruptIndex, match="another version"):
        decode(old)
    index_path(log).write_bytes(old)
    again = load(log)
    assert len(again.notes) == 1 and "another version" in again.notes[0] \
        and "rebuilt" in again.notes[0], again.notes
    assert_index_equal(again, want)
    for s in ("v1", "v2"):
        np.testing.assert_array_equal(again.columns.status[s], want.columns.status[s])
    assert decode(index_path(log).read_bytes()).columns.errors == want.columns.errors
    assert not load(log).notes  # saved in this version's layout: read as is
    result = CliRunner().invoke(cli, ["bench", "--log", str(log), "--json"])
    assert result.exit_code == 0 and orjson.loads(result.stdout_bytes)["unreachable_errors"]
