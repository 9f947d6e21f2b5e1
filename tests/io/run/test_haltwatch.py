"""The halt watch as a runner observer: events in <log>.events.jsonl, the state mirror,
acks appended by another process, restart, and the old inline layout."""

from __future__ import annotations

from pathlib import Path

import orjson

from shadow_burnin.config_sections import HaltConfig
from shadow_burnin.core.halt import ack_event
from shadow_burnin.core.timefmt import iso_ms as iso
from shadow_burnin.io.log.events import append_event
from shadow_burnin.io.log.sidecars import events_path
from shadow_burnin.io.log.store import Store, rebuild_state
from shadow_burnin.io.run.haltwatch import HaltWatch, log_events, tail_rounds

T0 = 1_800_000_000.0


def round_record(n: int, bucket: str, t: float | None = None) -> dict:
    side = {"text": "x", "latency_ms": 10.0, "ttft_ms": None, "status": 200,
            "finish_reason": "stop", "completion_tokens": 1, "error": None}
    return {"schema": 1, "round": n, "ts": iso(T0 + n if t is None else t),
            "prompt_id": f"p{n % 4}", "category": "c", "bucket": bucket, "divergence_byte": None,
            "prefix_match_chars": 0, "v1": side, "v2": side}


class Sink:
    def __init__(self) -> None:
        self.loud: list[str] = []
        self.warn: list[str] = []
        self.stops: list[str] = []


def watch_on(store: Store, sink: Sink, **settings) -> HaltWatch:
    w = HaltWatch(HaltConfig(**settings), store, loud=sink.loud.append, warn=sink.warn.append,
                  clock=lambda: iso(T0 + 10_000))
    w.prime()
    return w


def commit(store: Store, watch: HaltWatch, sink: Sink, records: list[dict]) -> list[dict]:
    """What the runner does with a batch: screen, write up to the cut, then committed."""
    cut = watch.screen(records)
    if cut is not None:
        records = records[:cut + 1]
        sink.stops.append(watch.stop_reason or "")
    store.append_many(records)
    watch.committed(records, store.state, sink.stops.append)
    return records


def read(log: Path) -> list[dict]:
    return [orjson.loads(x) for x in log.read_bytes().splitlines()]


def read_events(log: Path) -> list[dict]:
    path = events_path(log)
    return [orjson.loads(x) for x in path.read_bytes().splitlines()] if path.exists() else []


async def test_halt_is_logged_mirrored_and_stops_when_asked(tmp_path: Path) -> None:
    log = tmp_path / "b.jsonl"
    sink = Sink()
    with Store(log, tmp_path / "b.state") as store:
        watch = watch_on(store, sink, action="stop")
        buckets = ["exact"] * 40 + ["no-match"] * 20
        # one batch of all 60 rounds: the halt at round 51 is the last one written
        written = commit(store, watch, sink,
                         [round_record(n, b) for n, b in enumerate(buckets, 1)])
        assert [r["round"] for r in written] == list(range(1, 52))
        assert [r["round"] for r in read(log)] == list(range(1, 52))
        events = read_events(log)
        assert [e["event"] for e in events] == ["halt"] and events[0]["round"] == 51
        assert events[0]["action"] == "stop"
        assert store.state.extra["halt"]["active"] is True
        assert sink.stops == ["halted at round 51 (no-match spike)"] * 1
        assert len(sink.loud) == 1 and "round 51" in sink.loud[0]
        await watch.drain()
    # the state mirror is derived from the log alone
    assert rebuild_state(log).extra["halt"]["event"]["round"] == 51


async def test_flag_keeps_going_and_an_appended_ack_clears(tmp_path: Path) -> None:
    log = tmp_path / "b.jsonl"
    sink = Sink()
    with Store(log, tmp_path / "b.state") as store:
        watch = watch_on(store, sink)
        for n in range(1, 41):
            commit(store, watch, sink, [round_record(n, "no-match")])
        assert sink.stops == [] and watch.detector.active
        halt = read_events(log)[0]
        # what `ack-halt` does while the run holds the log: append to the events file
        append_event(log, ack_event(iso(T0 + 40.5), "reviewed: salt bug", halt, "ops"))
        commit(store, watch, sink, [round_record(41, "exact")])
        assert not watch.detector.active
        ack = [r for r in read_events(log) if r.get("event") == "ack-halt"]
        assert ack[0]["reason"] == "reviewed: salt bug" and ack[0]["by"] == "ops"
        assert ack[0]["halt_round"] == 30 and ack[0]["ts"] == iso(T0 + 40.5)
        assert store.state.extra["halt"]["active"] is False
        assert any("acknowledged" in w for w in sink.warn)
        # the rounds before the ack are forgiven: a new halt needs 30 rounds after it
        # (round 41 and rounds 42…70)
        for n in range(42, 72):
            commit(store, watch, sink, [round_record(n, "no-match")])
        halts = [r for r in read_events(log) if r.get("event") == "halt"]
        assert [h["round"] for h in halts] == [30, 70]
    assert len(read(log)) == 71  # wc -l == rounds: the events are beside the log


async def test_restart_does_not_halt_twice(tmp_path: Path) -> None:
    log, state = tmp_path / "b.jsonl", tmp_path / "b.state"
    sink = Sink()
    with Store(log, state) as store:
        watch = watch_on(store, sink)
        for n in range(1, 35):
            commit(store, watch, sink, [round_record(n, "no-match")])
    state.unlink()  # even a lost state: the halt comes back from the log's events
    with Store(log, state) as store:
        watch = watch_on(store, sink)
        assert watch.detector.active and watch.detector.window().parity_rounds == 34
        for n in range(35, 60):
            commit(store, watch, sink, [round_record(n, "no-match")])
    assert len([r for r in read_events(log) if r.get("event") == "halt"]) == 1


async def test_restart_with_a_spike_in_the_tail_halts_at_the_next_round(tmp_path: Path) -> None:
    log, state = tmp_path / "b.jsonl", tmp_path / "b.state"
    with Store(log, state) as store:  # rounds logged by a run without the halt watch
        store.append_many([round_record(n, "no-match") for n in range(1, 40)])
    sink = Sink()
    with Store(log, state) as store:
        watch = watch_on(store, sink)
        assert not watch.detector.active
        commit(store, watch, sink, [round_record(40, "exact")])
    assert [r["round"] for r in read_events(log) if r.get("event") == "halt"] == [40]


async def test_alert_outcomes_are_logged(tmp_path: Path) -> None:
    log = tmp_path / "b.jsonl"
    sink = Sink()
    with Store(log, tmp_path / "b.state") as store:
        watch = watch_on(store, sink, on_halt="exit 7", webhook="http://127.0.0.1:9/x",
                         webhook_timeout=2)
        for n in range(1, 31):
            commit(store, watch, sink, [round_record(n, "no-match")])
        await watch.drain()
    alerts = [r for r in read_events(log) if r.get("event") == "halt-alert"]
    assert {(a["channel"], a["ok"]) for a in alerts} == {("command", False), ("webhook", False)}
    assert any("exit 7" in w for w in sink.warn) and any("webhook" in w for w in sink.warn)


def test_tail_rounds_reads_back_only_the_window(tmp_path: Path) -> None:
    log = tmp_path / "t.jsonl"
    rows = [round_record(n, "exact") for n in range(1, 301)]
    rows.insert(150, {"kind": "event", "event": "halt", "ts": iso(T0 + 150), "round": 150})
    log.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows) + b'{"torn')
    got = tail_rounds(log, 50.0, chunk=700)  # small chunks: many reads from the end
    assert [r["round"] for r in got] == list(range(251, 301))
    assert [r["round"] for r in tail_rounds(log, 1e9)] == list(range(1, 301))
    assert tail_rounds(tmp_path / "missing.jsonl", 10) == []
    assert [e["round"] for e in log_events(log)] == [150]


def test_events_of_both_layouts_are_read(tmp_path: Path) -> None:
    """An old log with an inline halt line, continued by this version (events file)."""
    log = tmp_path / "old.jsonl"
    halt = {"kind": "event", "event": "halt", "ts": iso(T0 + 3), "round": 3}
    log.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in
                             [round_record(1, "exact"), round_record(2, "exact"), halt,
                              round_record(3, "no-match")]))
    append_event(log, ack_event(iso(T0 + 4), "ok", halt))
    assert [e["event"] for e in log_events(log)] == ["halt", "ack-halt"]
    state = rebuild_state(log)
    assert state.last_round == 3 and state.extra["halt"]["active"] is False


async def test_drift_warning_once(tmp_path: Path) -> None:
    sink = Sink()
    with Store(tmp_path / "d.jsonl", tmp_path / "d.state") as store:
        watch = watch_on(store, sink)
        for n in range(1, 601):
            r = round_record(n, "exact")
            r["v2"] = dict(r["v2"], latency_ms=10.0 + n)  # v2 slows down, v1 does not
            commit(store, watch, sink, [r])
    drift = [w for w in sink.warn if w.startswith("latency drift")]
    assert len(drift) == 1 and "first and last 200 completions" in drift[0]
