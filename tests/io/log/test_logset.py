"""Log sets: globs and repeated --log resolved to shards, shard names, segments, and
the checks that refuse a missing file, a glob matching nothing or a file that is no log."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shadow_burnin.errors import LogError
from shadow_burnin.io.log.logread import scan
from shadow_burnin.io.log.logset import (
    closed_segments,
    resolve,
    scan_segments,
    segment_path,
    segments,
    shard_names,
)
from tests.fleet.logs import write_log


def test_glob_resolves_shards_named_under_their_common_root(tmp_path: Path) -> None:
    for host in ("b", "a", "c"):
        write_log(tmp_path / "fleet" / host / "burnin.jsonl", 3)
    shards = resolve([str(tmp_path / "fleet" / "*" / "burnin.jsonl")])
    assert [s.name for s in shards] == ["a/burnin.jsonl", "b/burnin.jsonl", "c/burnin.jsonl"]
    assert [s.path.parent.name for s in shards] == ["a", "b", "c"]


def test_repeated_logs_keep_their_order_and_drop_duplicates(tmp_path: Path) -> None:
    one, two = tmp_path / "x" / "one.jsonl", tmp_path / "two.jsonl"
    write_log(one, 2)
    write_log(two, 2)
    shards = resolve([str(two), str(one), str(tmp_path / "x" / ".." / "two.jsonl")])
    assert [s.name for s in shards] == ["two.jsonl", "x/one.jsonl"]


def test_one_log_is_named_by_its_file_name(tmp_path: Path) -> None:
    assert shard_names([tmp_path / "deep" / "burnin.jsonl"]) == ["burnin.jsonl"]


def test_glob_matching_nothing_is_refused_naming_it(tmp_path: Path) -> None:
    pattern = str(tmp_path / "nowhere" / "*.jsonl")
    with pytest.raises(LogError, match="matches no file") as err:
        resolve([pattern])
    assert pattern in str(err.value)


def test_missing_shard_is_refused_naming_it(tmp_path: Path) -> None:
    write_log(tmp_path / "a.jsonl", 2)
    with pytest.raises(LogError, match="no such log file") as err:
        resolve([str(tmp_path / "a.jsonl"), str(tmp_path / "gone.jsonl")])
    assert "gone.jsonl" in str(err.value)


@pytest.mark.parametrize("content", [b"hello world\n", b"[1, 2]\n", b'{"no": "ts"}\n',
                                     b"\x00\x01binary"])
def test_file_that_is_not_a_log_is_refused(tmp_path: Path, content: bytes) -> None:
    write_log(tmp_path / "fleet" / "a.jsonl", 2)
    bad = tmp_path / "fleet" / "b.jsonl"
    bad.write_bytes(content)
    with pytest.raises(LogError, match="not a shadow-burnin log") as err:
        resolve([str(tmp_path / "fleet" / "*.jsonl")])
    assert "b.jsonl" in str(err.value)


def test_directory_matched_by_a_glob_is_refused(tmp_path: Path) -> None:
    (tmp_path / "d.jsonl").mkdir()
    with pytest.raises(LogError, match="directory"):
        resolve([str(tmp_path / "*.jsonl")])


def test_empty_log_is_a_log(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_bytes(b"")
    assert [s.name for s in resolve([str(tmp_path / "empty.jsonl")])] == ["empty.jsonl"]


def test_segments_are_found_in_number_order_live_log_last(tmp_path: Path) -> None:
    log = tmp_path / "burnin.jsonl"
    for n in (2, 10, 1):
        segment_path(log, n).write_bytes(b"")
    log.write_bytes(b"")
    for decoy in ("burnin.jsonl.idx", "burnin.jsonl.events.jsonl", "burnin.jsonl.12ab",
                  "burnin.jsonl.001", "burnin.jsonl.00003.idx"):
        (tmp_path / decoy).write_bytes(b"")
    assert [p.name for p in closed_segments(log)] == [
        "burnin.jsonl.00001", "burnin.jsonl.00002", "burnin.jsonl.00010"]
    assert segments(log)[-1] == log


def test_scan_spans_segments_as_one_log(tmp_path: Path) -> None:
    whole = tmp_path / "whole" / "burnin.jsonl"
    write_log(whole, 30, seed=4)
    lines = whole.read_bytes().splitlines(keepends=True)
    log = tmp_path / "rot" / "burnin.jsonl"
    log.parent.mkdir()
    segment_path(log, 1).write_bytes(b"".join(lines[:10]))
    segment_path(log, 2).write_bytes(b"".join(lines[10:25]))
    log.write_bytes(b"".join(lines[25:]))
    a, b = scan(whole).columns, scan_segments(log).columns
    assert len(b) == 30
    np.testing.assert_array_equal(a.bucket, b.bucket)
    np.testing.assert_array_equal(a.ts, b.ts)
    np.testing.assert_array_equal(a.latency["v2"], b.latency["v2"])
    assert [a.prompts[i] for i in a.prompt] == [b.prompts[i] for i in b.prompt]
