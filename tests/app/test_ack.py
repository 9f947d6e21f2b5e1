"""app.ack: the acknowledgement is one event appended to <log>.events.jsonl, run or no run."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from shadow_burnin.app.ack import acknowledge, run_holds
from shadow_burnin.errors import ConfigError, LogError
from shadow_burnin.io.log.events import append_event, events_path, iter_event_file
from shadow_burnin.io.log.store import Store
from tests.io.log.test_store import record

HALT = {"event": "halt", "ts": "2026-11-27T00:00:02.000Z", "round": 2, "action": "flag",
        "window": {}, "worst_prompts": []}


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "b.jsonl"
    with Store(path, tmp_path / "b.state") as store:
        for i in range(1, 4):
            store.append(record(i))
    return path


def test_no_active_halt_writes_nothing(log: Path) -> None:
    result = acknowledge(log, "why", "ops", ts="2026-11-27T00:01:00.000Z")
    assert not result.acknowledged
    assert not events_path(log).exists()


def test_ack_appends_one_event_and_clears_the_halt(log: Path) -> None:
    append_event(log, HALT)
    before = log.read_bytes()
    result = acknowledge(log, "  known salt  ", "ops", ts="2026-11-27T00:01:00.000Z")
    assert result.acknowledged and result.halt["round"] == 2 and result.reason == "known salt"
    events = list(iter_event_file(log))
    assert [e["event"] for e in events] == ["halt", "ack-halt"]
    assert events[1]["reason"] == "known salt" and events[1]["by"] == "ops"
    assert log.read_bytes() == before  # one line per round: the log is not touched
    assert not acknowledge(log, "again", "ops").acknowledged  # nothing active any more


def test_ack_while_a_run_holds_the_log(log: Path, tmp_path: Path) -> None:
    append_event(log, HALT)
    with Store(log, tmp_path / "b.state"):  # holds the lock, like a running burn-in
        assert run_holds(log)
        result = acknowledge(log, "seen", None, ts="2026-11-27T00:01:00.000Z")
    assert result.acknowledged and result.running
    assert not run_holds(log)
    assert [e["event"] for e in iter_event_file(log)] == ["halt", "ack-halt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "b.jsonl", "b.jsonl.events.jsonl", "b.jsonl.idx", "b.jsonl.lock",
        "b.state"]  # no request file (the round index: the store keeps it)


def test_inline_halt_of_an_old_log_is_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "old.jsonl"
    path.write_bytes(orjson.dumps(record(1)) + b"\n" + orjson.dumps(
        {"kind": "event", **HALT}) + b"\n")
    assert acknowledge(path, "ok", "ops").acknowledged
    assert [e["event"] for e in iter_event_file(path)] == ["ack-halt"]


@pytest.mark.parametrize("reason", ["", "   ", "x" * 2001])
def test_bad_reason_refused(log: Path, reason: str) -> None:
    append_event(log, HALT)
    with pytest.raises(ConfigError):
        acknowledge(log, reason, "ops")


def test_missing_log(tmp_path: Path) -> None:
    with pytest.raises(LogError, match="no such log file"):
        acknowledge(tmp_path / "none.jsonl", "x")
