"""The runner's index appends, batched: a segment every ``BATCH_ROUNDS`` rounds or when
the oldest round not yet in the index is ``BATCH_SECONDS`` old, and on close/rotation;
what the file holds always chains and equals a rebuild from the log."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shadow_burnin.io.log import index as index_mod
from shadow_burnin.io.log.index import decode, load
from shadow_burnin.io.log.sidecars import index_path
from shadow_burnin.io.log.store import Store
from tests.io.log.test_index import _fresh, assert_index_equal, check_offsets
from tests.io.log.test_logscan import record


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def rounds(seed: int, n: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    out: list[dict[str, Any]] = []
    while len(out) < n:
        r = record(rng, len(out) + 1, events=False)
        if r.get("kind") is None:
            out.append(r)
    return out


def on_disk(log: Path) -> index_mod.Index | None:
    path = index_path(log)
    return decode(path.read_bytes()) if path.exists() else None


def open_store(log: Path, clock: Clock, batch: int) -> Store:
    store = Store(log, log.with_suffix(".state"))
    store.open()
    assert store._index is not None
    store._index._clock = clock
    store._index.batch_rounds = batch
    return store


def test_a_segment_when_the_batch_is_full_or_old_and_on_close(tmp_path: Path) -> None:
    log = tmp_path / "a.jsonl"
    records = rounds(1, 80)
    clock = Clock()
    store = open_store(log, clock, batch=20)
    try:
        store.append_many(records[0:7])
        store.append_many(records[7:14])
        assert on_disk(log) is None and store._index.pending == 14  # not yet due
        store.append_many(records[14:21])  # 21 rounds ≥ 20: one segment
        first = on_disk(log)
        assert first is not None and first.covered == log.stat().st_size
        assert len(first.columns) == 21 and store._index.pending == 0
        store.append_many(records[21:28])
        assert on_disk(log).covered == first.covered  # pending, not written
        clock.now += index_mod.BATCH_SECONDS + 0.01  # the oldest pending round is old
        store.append_many(records[28:30])
        assert on_disk(log).covered == log.stat().st_size
        assert store._index.segments == 2
        store.append_many(records[30:33])
        assert on_disk(log).covered < log.stat().st_size
    finally:
        store.close()  # flushes what is pending
    final = on_disk(log)
    assert final is not None and final.covered == log.stat().st_size
    assert final.segments == 3 and len(final.columns) == 33
    assert_index_equal(final, _fresh(log))
    check_offsets(log, final)


def test_a_reader_rewriting_the_index_between_flushes_keeps_the_chain(
        tmp_path: Path) -> None:
    """A reader that folds the rounds the runner has not appended yet replaces the file;
    the runner's next flush sees that and chains on it (nothing folded twice, nothing
    lost), so the file still covers the whole log by itself after close."""
    log = tmp_path / "a.jsonl"
    records = rounds(2, 60)
    clock = Clock()
    store = open_store(log, clock, batch=10)
    try:
        store.append_many(records[0:10])  # a segment
        store.append_many(records[10:15])  # pending
        read = load(log)  # a reader: folds rounds 11-15 from the log and saves
        assert len(read.columns) == 15 and on_disk(log).segments == 1
        store.append_many(records[15:25])  # due: the file changed, chained on it
        mid = on_disk(log)
        assert mid is not None and mid.covered == log.stat().st_size
        store.append_many(records[25:40])  # due: a plain segment again
        assert on_disk(log).segments == 2
        store.append_many(records[40:45])
        load(log)  # a reader again, then close with rounds pending
        store.append_many(records[45:47])
    finally:
        store.close()
    assert store._index.failed is None
    final = on_disk(log)
    assert final is not None and final.covered == log.stat().st_size
    assert not load(log, save=False).notes
    assert_index_equal(final, _fresh(log))
    assert list(final.rounds) == list(range(1, 48))


def test_a_kill_between_flushes_loses_only_what_readers_fold(tmp_path: Path) -> None:
    """The index as a killed runner leaves it (rounds pending, never appended): behind
    the log, chained, and caught up from the log equals a rebuild."""
    log = tmp_path / "a.jsonl"
    records = rounds(3, 30)
    store = open_store(log, Clock(), batch=8)
    store.append_many(records[0:8])
    store.append_many(records[8:13])
    store._fd, fd = None, store._fd  # a kill: no close, no flush
    assert fd is not None
    os.close(fd)
    store.close()
    left = on_disk(log)
    assert left is not None and len(left.columns) == 8 < 13
    caught = load(log, save=False)
    assert not caught.notes and len(caught.columns) == 13
    assert_index_equal(caught, _fresh(log))


@pytest.mark.parametrize("batch", [1, 3, 1024])
def test_any_batch_size_leaves_the_same_index(tmp_path: Path, batch: int) -> None:
    log = tmp_path / "a.jsonl"
    records = rounds(4, 50)
    clock = Clock()
    store = open_store(log, clock, batch=batch)
    try:
        for i in range(0, 50, 4):
            store.append_many(records[i:i + 4])
            clock.now += 0.3
    finally:
        store.close()
    final = on_disk(log)
    assert final is not None and final.covered == log.stat().st_size
    assert_index_equal(final, _fresh(log))
