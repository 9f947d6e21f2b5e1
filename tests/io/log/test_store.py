"""Log/state: append, torn line, crash between append and state write, lock, rebuild."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from shadow_burnin.core.halt import ack_event
from shadow_burnin.errors import LockedError, LogError, StateError
from shadow_burnin.io.log.events import append_event
from shadow_burnin.io.log.sidecars import events_path
from shadow_burnin.io.log.store import State, Store, rebuild_state


def record(n: int, bucket: str = "exact", cursor: int | None = None) -> dict:
    side = {"text": "t", "latency_ms": 1.0, "ttft_ms": None, "status": 200,
            "finish_reason": "stop", "completion_tokens": 1, "error": None}
    return {"schema": 1, "round": n, "ts": f"2026-11-27T00:00:{n % 60:02d}.000Z",
            "prompt_id": f"p{n}", "category": "c", "bucket": bucket, "divergence_byte": None,
            "prefix_match_chars": 1, "v1": side, "v2": side, "setup": "abc", "seed": 9,
            "cursor": n - 1 if cursor is None else cursor}


@pytest.fixture
def paths(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "run.jsonl", tmp_path / "run.state"


def write_rounds(log: Path, state: Path, n: int) -> None:
    with Store(log, state) as store:
        for i in range(1, n + 1):
            store.append(record(i, "no-match" if i % 3 == 0 else "exact"))


def test_append_and_reopen(paths: tuple[Path, Path]) -> None:
    log, state = paths
    write_rounds(log, state, 5)
    assert len(log.read_bytes().splitlines()) == 5
    saved = orjson.loads(state.read_bytes())
    assert saved["last_round"] == 5 and saved["cursor"] == 5 and saved["seed"] == 9
    assert saved["counts"]["no-match"] == 1 and saved["counts"]["exact"] == 4
    store = Store(log, state)
    assert store.open().warnings == []
    assert store.state.last_round == 5
    store.close()


def test_torn_last_line_moved_aside(paths: tuple[Path, Path]) -> None:
    log, state = paths
    write_rounds(log, state, 3)
    torn = orjson.dumps(record(4))[:37]
    with open(log, "ab") as fh:
        fh.write(torn)
    store = Store(log, state)
    warnings = store.open().warnings
    assert any("torn" in w for w in warnings)
    assert log.read_bytes().endswith(b"\n")
    assert len(log.read_bytes().splitlines()) == 3
    assert (log.parent / "run.jsonl.torn").read_bytes() == torn + b"\n"
    store.append(record(4))
    store.close()
    assert [orjson.loads(x)["round"] for x in log.read_bytes().splitlines()] == [1, 2, 3, 4]


def test_crash_between_append_and_state_write(paths: tuple[Path, Path]) -> None:
    log, state = paths
    write_rounds(log, state, 4)
    with open(log, "ab") as fh:  # round 5 reached the log, the state write never happened
        fh.write(orjson.dumps(record(5, "no-match")) + b"\n")
    store = Store(log, state)
    warnings = store.open().warnings
    assert any("caught up" in w for w in warnings)
    assert store.state.last_round == 5
    assert store.state.counts == rebuild_state(log).counts
    assert store.state.cursor == 5
    store.close()


def test_state_ahead_of_log_is_rebuilt(paths: tuple[Path, Path]) -> None:
    log, state = paths
    write_rounds(log, state, 4)
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:2]))  # the log lost rounds 3-4 (e.g. restored backup)
    store = Store(log, state)
    assert any("rebuilt" in w for w in store.open().warnings)
    assert store.state.last_round == 2
    store.close()


def test_missing_state_is_rebuilt(paths: tuple[Path, Path]) -> None:
    log, state = paths
    write_rounds(log, state, 6)
    state.unlink()
    store = Store(log, state)
    store.open()
    assert (store.state.last_round, store.state.cursor, store.state.seed) == (6, 6, 9)
    assert store.state.setup == "abc"
    store.close()


def test_second_writer_is_locked_out(paths: tuple[Path, Path]) -> None:
    log, state = paths
    first = Store(log, state)
    first.open()
    with pytest.raises(LockedError, match="another shadow-burnin run"):
        Store(log, state).open()
    first.close()
    Store(log, state).open()


def test_corrupt_state_refused_and_kept(paths: tuple[Path, Path]) -> None:
    log, state = paths
    write_rounds(log, state, 2)
    state.write_bytes(b"{not json")
    with pytest.raises(StateError, match="corrupt state"):
        Store(log, state).open()
    assert state.read_bytes() == b"{not json"


def test_foreign_log_refused(paths: tuple[Path, Path]) -> None:
    log, state = paths
    log.write_bytes(b'{"hello": "world"}\n')
    with pytest.raises(LogError, match="not a shadow-burnin"):
        Store(log, state).open()
    assert log.read_bytes() == b'{"hello": "world"}\n'


def test_state_apply_ignores_legacy_cursor() -> None:
    st = State()
    st.apply({**record(1), "source": "legacy", "cursor": None, "seed": None, "setup": None})
    st.apply(record(2, cursor=0))
    assert (st.last_round, st.cursor) == (2, 1)


def test_writers_from_two_threads_are_serialised(paths: tuple[Path, Path]) -> None:
    # the runner commits from a worker thread while the halt watch may append an event
    # from the loop thread: every line stays whole and the state matches both files
    import threading

    log, state = paths
    with Store(log, state) as store:
        seen: list[State] = []

        def rounds(start: int) -> None:
            for i in range(start, start + 200, 2):
                store.append_many([record(i), record(i + 1)])

        def events() -> None:
            for i in range(100):
                store.append_events([{"kind": "event", "event": "note", "ts": "x", "n": i}])
                seen.append(store.state)

        workers = [threading.Thread(target=rounds, args=(1,)),
                   threading.Thread(target=events)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        lines = log.read_bytes().splitlines()
        assert len(lines) == 200 and all(orjson.loads(line)["round"] for line in lines)
        events = events_path(log).read_bytes().splitlines()
        assert [orjson.loads(e)["n"] for e in events] == list(range(100))
        assert store.state.log_size == log.stat().st_size
        saved = orjson.loads(state.read_bytes())
        assert saved["log_size"] == log.stat().st_size and saved["last_round"] == 200
        assert saved["events_size"] == events_path(log).stat().st_size
        # a reader holds a finished state, never one being applied
        assert all(s.log_size <= log.stat().st_size for s in seen)
        assert len({id(s) for s in seen}) == len(seen)


def test_state_copy_is_independent() -> None:
    a = State(counts={"exact": 1}, extra={"halt": {"active": True}})
    b = a.copy()
    b.apply(record(3, "exact"))
    b.extra["x"] = 1
    assert a.counts == {"exact": 1} and a.last_round == 0 and "x" not in a.extra
    assert b.counts["exact"] == 2 and b.last_round == 3


def test_only_rounds_go_to_the_log(paths: tuple[Path, Path]) -> None:
    log, state = paths
    with Store(log, state) as store:
        store.append(record(1))
        for other in ({"kind": "event", "event": "halt", "ts": "x"},
                      {"kind": "aa", "round": 1, "ts": "x"}):
            with pytest.raises(ValueError, match="only rounds"):
                store.append_many([record(2), other])
    assert len(log.read_bytes().splitlines()) == 1  # wc -l == rounds


def test_state_of_another_log_is_refused_and_kept(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_rounds(a, tmp_path / "a.state", 3)
    with Store(b, tmp_path / "b.state") as store:
        store.append(record(7))
    kept = (tmp_path / "a.state").read_bytes()
    for log in (b, tmp_path / "new.jsonl"):  # another log, or an empty one
        with pytest.raises(StateError, match="belongs to another log"):
            Store(log, tmp_path / "a.state").open()
    assert (tmp_path / "a.state").read_bytes() == kept
    assert not (tmp_path / "new.jsonl").exists() or not (tmp_path / "new.jsonl").read_bytes()
    # a state written before log_head existed is told apart by its first round's time
    old = orjson.loads(kept)
    del old["log_head"]
    (tmp_path / "old.state").write_bytes(orjson.dumps(old))
    with pytest.raises(StateError, match="belongs to another log"):
        Store(b, tmp_path / "old.state").open()
    with Store(a, tmp_path / "old.state") as store:  # its own log: adopted
        assert store.state.last_round == 3 and store.state.log_head is not None


def test_events_from_another_process_are_polled(paths: tuple[Path, Path]) -> None:
    log, state = paths
    with Store(log, state) as store:
        store.append(record(1))
        halt = {"kind": "event", "event": "halt", "ts": "2026-11-27T00:00:01.000Z", "round": 1}
        assert store.append_events([halt]) == []
        assert store.state.extra["halt"]["active"] is True
        assert store.poll_events() == []
        ack = ack_event("2026-11-27T00:00:02.000Z", "seen", halt, "ops")
        append_event(log, ack)  # what `ack-halt` does while a run holds the log
        assert store.poll_events() == [ack]
        assert store.state.extra["halt"]["active"] is False
        assert store.poll_events() == []
        assert store.state.events_size == events_path(log).stat().st_size
    # the state (even a lost one) comes back from the log and the events file
    state.unlink()
    with Store(log, state) as store:
        assert store.state.extra["halt"]["ack"]["reason"] == "seen"
        assert store.state.extra["halt"]["active"] is False
    assert rebuild_state(log).extra["halt"]["active"] is False


def test_a_line_over_the_cap_is_refused_not_read_whole(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Every line reader goes through io.log.lines, which bounds a line."""
    from shadow_burnin.io.log import lines
    from shadow_burnin.io.log.logread import iter_records

    monkeypatch.setattr(lines, "MAX_LINE", 1024)
    log = tmp_path / "big.jsonl"
    log.write_bytes(orjson.dumps(record(1)) + b"\n" + b'{"x":"' + b"y" * 5000)
    with pytest.raises(LogError, match="line is over"):
        list(iter_records(log))
    with pytest.raises(LogError, match="line is over"):
        rebuild_state(log)
