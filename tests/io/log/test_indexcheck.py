"""The index CRC started early (``io.log.indexcheck``, ``app.readahead``): the same
checks, never a stale or corrupt index trusted."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from shadow_burnin.app.readahead import check_early, log_flags
from shadow_burnin.cli import cli
from shadow_burnin.io.log import indexcheck
from shadow_burnin.io.log.index import load
from shadow_burnin.io.log.sidecars import index_path
from tests.io.log.test_index import _fresh, assert_index_equal
from tests.io.log.test_logscan import write_log


def wait(idx: Path) -> None:
    """Let the early check finish (its thread joined: no sleep)."""
    job = indexcheck._pending.get(os.path.abspath(idx))
    assert job is not None, "no early check was started"
    job[0].join()


def test_the_early_crcs_are_the_ones_the_reader_computes(tmp_path: Path) -> None:
    log = tmp_path / "a.jsonl"
    write_log(log, 7, 300)
    plain = load(log)
    idx = index_path(log)
    fd = os.open(idx, os.O_RDONLY)
    try:
        want = indexcheck.segment_crcs(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)
    assert want  # at least one segment
    indexcheck.prefetch(idx)
    wait(idx)
    fd = os.open(idx, os.O_RDONLY)
    try:
        assert indexcheck.prefetched(idx, fd) == want
        assert indexcheck.prefetched(idx, fd) is None  # taken once
    finally:
        os.close(fd)
    indexcheck.prefetch(idx)
    early = load(log)
    assert os.path.abspath(idx) not in indexcheck._pending  # the reader took them
    assert not early.notes
    assert_index_equal(early, plain)


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_corrupt_index_is_caught_whether_damaged_before_or_after_the_early_check(
        tmp_path: Path, when: str) -> None:
    log = tmp_path / "a.jsonl"
    write_log(log, 3, 150)
    good = load(log)
    idx = index_path(log)
    raw = bytearray(idx.read_bytes())
    raw[-5] ^= 0xFF  # a flipped byte: same size

    def damage() -> None:
        st = idx.stat()
        idx.write_bytes(raw)
        # a distinct modification time even on a coarse clock: the file is not the one
        # the early CRCs were computed from
        os.utime(idx, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))

    if when == "before":
        damage()
    indexcheck.prefetch(idx)
    wait(idx)
    if when == "after":
        damage()
    again = load(log)
    assert again.notes and "corrupt" in again.notes[0] and "rebuilt" in again.notes[0]
    assert_index_equal(again, good)
    assert_index_equal(again, _fresh(log))


def test_log_flags_and_which_commands_start_early(tmp_path: Path) -> None:
    assert log_flags(["--json", "--log", "a.jsonl", "--log=b.jsonl", "--since", "x"]) == [
        "a.jsonl", "b.jsonl"]
    assert log_flags(["--log"]) == []
    assert log_flags(["--", "--log", "a"]) == []
    log = tmp_path / "a.jsonl"
    write_log(log, 2, 50)
    load(log)
    idx = os.path.abspath(index_path(log))
    check_early("show", ["--log", str(log)])  # not a command that starts early
    check_early("bench", ["--log", str(tmp_path / "*.jsonl")])  # a glob: expanded later
    check_early("bench", ["--log", str(tmp_path / "missing.jsonl")])
    assert idx not in indexcheck._pending
    check_early("bench", ["--json", "--log", str(log)])
    assert idx in indexcheck._pending
    indexcheck._pending.pop(idx)[0].join()


def test_bench_with_the_early_check_prints_what_it_prints_without_the_index(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "a.jsonl"
    write_log(log, 5, 400)
    load(log)
    runner = CliRunner()
    warm = runner.invoke(cli, ["bench", "--json", "--log", str(log)])
    assert warm.exit_code == 0, warm.output
    assert os.path.abspath(index_path(log)) not in indexcheck._pending  # consumed
    monkeypatch.setenv("SHADOW_BURNIN_INDEX", "off")
    off = runner.invoke(cli, ["bench", "--json", "--log", str(log)])
    assert off.exit_code == 0, off.output
    assert warm.stdout == off.stdout


def test_an_index_of_the_crc_version_is_rebuilt_with_a_note(tmp_path: Path) -> None:
    log = tmp_path / "a.jsonl"
    write_log(log, 4, 120)
    good = load(log)
    idx = index_path(log)
    raw = idx.read_bytes()
    assert raw[:4] == indexcheck.MAGIC == b"SBX3"
    idx.write_bytes(indexcheck.OLD_MAGIC + raw[4:])  # what version 2 began with
    again = load(log)
    assert again.notes and "index version 2" in again.notes[0]
    assert "rebuilt" in again.notes[0]
    assert_index_equal(again, good)
    assert idx.read_bytes()[:4] == b"SBX3" and not load(log).notes


def test_the_checksum_streams_like_one_call(tmp_path: Path) -> None:
    data = bytes(range(256)) * 5000
    path = tmp_path / "blob"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        window = memoryview(bytearray(1000))  # many reads per range
        assert indexcheck.crc_range(fd, 7, len(data) - 3, window) == indexcheck.checksum(
            data[7:-3])
        assert indexcheck.checksum(data[:10], data[10:]) == indexcheck.checksum(data)
        assert indexcheck.checksum(data) != indexcheck.checksum(data[:-1] + b"x")
    finally:
        os.close(fd)
