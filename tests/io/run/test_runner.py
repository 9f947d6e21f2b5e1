"""The burn-in loop against in-process scripted OpenAI-compatible servers."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from shadow_burnin.core.prompt import Prompt
from shadow_burnin.io.http.client import Endpoint, RequestSpec
from shadow_burnin.io.log.store import Store, rebuild_state
from shadow_burnin.io.run.runner import Runner, RunPlan
from shadow_burnin.render.progress import NullProgress

PROMPTS = [Prompt(id=f"{c}-{i}", category=c, prompt=f"prompt {c} {i} é日本")
           for c in ("alpha", "beta", "gamma") for i in range(3)]


def read_log(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


async def burn(tmp_path: Path, v1: str, v2: str, *, rounds: int = 6, interval: float = 0.0,
               prompts: list[Prompt] = PROMPTS, **spec: Any) -> list[dict[str, Any]]:
    concurrent = spec.pop("concurrent", False)
    concurrency = spec.pop("concurrency", 1)
    plan = RunPlan(v1=Endpoint(v1), v2=Endpoint(v2), spec=RequestSpec(**spec), setup="s",
                   seed=3, interval=interval, rounds=rounds, concurrent=concurrent,
                   concurrency=concurrency)
    store = Store(tmp_path / "log.jsonl", tmp_path / "log.state")
    store.open()
    try:
        await Runner(plan, prompts, store, NullProgress()).run()
    finally:
        store.close()
    return read_log(tmp_path / "log.jsonl")


@pytest.mark.parametrize("api", ["chat", "completions"])
@pytest.mark.parametrize("stream", [True, False])
async def test_identical_servers_are_exact(tmp_path: Path, scripted_server: Any, api: str,
                                           stream: bool) -> None:
    a = await scripted_server(per_chunk_ms=1)
    b = await scripted_server()
    log = await burn(tmp_path, a.url, b.url, api=api, stream=stream)
    assert [r["round"] for r in log] == [1, 2, 3, 4, 5, 6]
    assert {r["bucket"] for r in log} == {"exact"}
    for r in log:
        assert "\n" in r["v1"]["text"] and r["v1"]["text"] == r["v2"]["text"]
        assert r["v1"]["status"] == 200 and r["v1"]["finish_reason"] == "stop"
        assert (r["v1"]["ttft_ms"] is not None) is stream
        assert r["v1"]["latency_ms"] > 0
    # both sides got the identical body, temperature 0, the configured endpoint
    for x, y in zip(a.requests, b.requests, strict=True):
        assert x.body == y.body
        assert x.body["temperature"] == 0 and x.body["stream"] is stream
        assert x.path == ("/v1/chat/completions" if api == "chat" else "/v1/completions")


async def test_multiline_reply_compared_whole(tmp_path: Path, scripted_server: Any) -> None:
    """Regression: the earlier tool diffed only the first line of each reply."""
    a = await scripted_server(reply="first line\nsecond line\nthird line")
    b = await scripted_server(reply="first line\nsecond line\nthird LINE")
    log = await burn(tmp_path, a.url, b.url, rounds=3)
    assert {r["bucket"] for r in log} == {"no-match"}
    assert log[0]["divergence_byte"] == len("first line\nsecond line\nthird ")
    assert log[0]["prefix_match_chars"] == len("first line\nsecond line\nthird ")


async def test_diverging_v2_and_prefix_only(tmp_path: Path, scripted_server: Any) -> None:
    a = await scripted_server()
    b = await scripted_server(diverge_after=2)  # from request 3 on, v2 appends a salt
    log = await burn(tmp_path, a.url, b.url, rounds=5)
    assert [r["bucket"] for r in log] == ["exact", "exact", "prefix-only", "prefix-only",
                                          "prefix-only"]
    r = log[2]
    assert r["divergence_byte"] == len(r["v1"]["text"].encode())


async def test_unreachable_v2_keeps_going(tmp_path: Path, scripted_server: Any,
                                          unused_tcp_port: int) -> None:
    a = await scripted_server()
    log = await burn(tmp_path, a.url, f"http://127.0.0.1:{unused_tcp_port}", rounds=4)
    assert [r["bucket"] for r in log] == ["v2-unreachable"] * 4
    assert all(r["v2"]["error"].startswith("connection-refused") for r in log)
    assert all(r["divergence_byte"] is None for r in log)


async def test_http_500_and_timeout(tmp_path: Path, scripted_server: Any) -> None:
    a = await scripted_server(delay_ms=1500)
    b = await scripted_server(fault="http-500")
    log = await burn(tmp_path, a.url, b.url, rounds=2, timeout_s=0.5)
    assert [r["bucket"] for r in log] == ["both-unreachable"] * 2
    assert all(r["v1"]["error"].startswith("timeout") for r in log)
    assert all(r["v2"]["error"] == "http-500" and r["v2"]["status"] == 500 for r in log)


async def test_order_alternates(tmp_path: Path, scripted_server: Any) -> None:
    arrivals: list[str] = []

    def tagged(name: str):
        def reply(body: dict[str, Any]) -> str:
            arrivals.append(name)
            return "same"
        return reply
    a = await scripted_server(reply=tagged("v1"))
    b = await scripted_server(reply=tagged("v2"))
    log = await burn(tmp_path, a.url, b.url, rounds=4)
    assert [r["first"] for r in log] == ["v1", "v2", "v1", "v2"]
    assert arrivals == ["v1", "v2", "v2", "v1", "v1", "v2", "v2", "v1"]


async def test_concurrent_sends_both_at_once(tmp_path: Path, scripted_server: Any) -> None:
    """A logical check: with --concurrent, when the later request of a round arrives the
    other side is still answering (each takes 300 ms); sent one after the other, the
    first would be done before the second is sent."""
    servers: dict[str, Any] = {}
    overlap: dict[str, list[bool]] = {"v1": [], "v2": []}

    def seen(name: str, other: str):
        def reply(body: dict[str, Any]) -> str:
            overlap[name].append(servers[other].active >= 1)
            return "same"
        return reply
    servers["v1"] = a = await scripted_server(delay_ms=300, reply=seen("v1", "v2"))
    servers["v2"] = b = await scripted_server(delay_ms=300, reply=seen("v2", "v1"))
    log = await burn(tmp_path, a.url, b.url, rounds=2, concurrent=True)
    assert [r["first"] for r in log] == ["both", "both"]
    assert [x or y for x, y in zip(overlap["v1"], overlap["v2"], strict=True)] == [True, True]
    # the control: one after the other, never both at once
    (tmp_path / "log.jsonl").unlink()
    (tmp_path / "log.state").unlink()
    overlap = {"v1": [], "v2": []}
    await burn(tmp_path, a.url, b.url, rounds=2)
    assert not any(overlap["v1"]) and not any(overlap["v2"])


class VirtualTime:
    """An injected clock and sleep: sleeping moves the clock at once; ``cost`` seconds
    pass in every round (a RoundStep), so a slow round is slow in this time only."""

    def __init__(self) -> None:
        self.t = 0.0
        self.starts: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, delay: float) -> None:
        self.t += delay

    def step(self, cost: float):
        async def play(record: dict[str, Any], ctx: Any) -> None:
            self.starts.append(self.t)
            self.t += cost
        return play


@pytest.mark.parametrize(("cost", "expected"), [
    (0.0, [0.0, 0.25, 0.5, 0.75]),  # on the grid, one slot each
    (0.6, [0.0, 0.75, 1.5, 2.25]),  # a slow round skips the missed slots: no burst
])
async def test_fixed_schedule_no_burst(tmp_path: Path, scripted_server: Any, cost: float,
                                       expected: list[float]) -> None:
    a, b = await scripted_server(), await scripted_server()
    vt = VirtualTime()
    plan = RunPlan(v1=Endpoint(a.url), v2=Endpoint(b.url), spec=RequestSpec(), setup="s",
                   seed=3, interval=0.25, rounds=4)
    store = Store(tmp_path / "log.jsonl", tmp_path / "log.state")
    store.open()
    try:
        await Runner(plan, PROMPTS, store, NullProgress(), steps=[vt.step(cost)],
                     clock=vt.now, sleep=vt.sleep).run()
    finally:
        store.close()
    # each round's step runs as the round ends; its start is the end minus nothing
    # (the requests take no virtual time): the slot times of the grid
    assert vt.starts == pytest.approx(expected)


async def test_resume_continues_numbering_and_schedule(tmp_path: Path,
                                                       scripted_server: Any) -> None:
    a = await scripted_server()
    b = await scripted_server()
    first = await burn(tmp_path, a.url, b.url, rounds=4)
    both = await burn(tmp_path, a.url, b.url, rounds=5)
    assert [r["round"] for r in both] == list(range(1, 10))
    assert both[:4] == first
    assert [r["cursor"] for r in both] == list(range(9))
    # 9 prompts, so rounds 1..9 are one full cycle: each prompt exactly once
    assert sorted(r["prompt_id"] for r in both) == sorted(p.id for p in PROMPTS)
    state = orjson.loads((tmp_path / "log.state").read_bytes())
    assert state["last_round"] == 9 and state["cursor"] == 9
    assert state["counts"] == rebuild_state(tmp_path / "log.jsonl").counts


class TickClock:
    """An injected clock that moves ``step`` seconds each time it is read: a duration is
    reached after a known number of reads, whatever the machine's speed."""

    def __init__(self, step: float) -> None:
        self.t, self.step, self.reads = 1000.0, step, 0

    def __call__(self) -> float:
        self.reads += 1
        self.t += self.step
        return self.t


@pytest.mark.parametrize("concurrency", [1, 8])
async def test_interval_0_rounds_is_exact(tmp_path: Path, scripted_server: Any,
                                          concurrency: int) -> None:
    a, b = await scripted_server(), await scripted_server()
    log = await burn(tmp_path, a.url, b.url, rounds=37, interval=0.0, concurrency=concurrency)
    assert [r["round"] for r in log] == list(range(1, 38))
    assert a.count == b.count == 37  # not one request more


@pytest.mark.parametrize("concurrency", [1, 8])
async def test_interval_0_duration_ends(tmp_path: Path, scripted_server: Any,
                                        concurrency: int) -> None:
    """Defect 2: with interval 0 every slot time is t0; the deadline must come from the
    clock. The clock moves 0.01 s per read, the duration is 0.5 s: the run ends, after
    at most 50 launches (each launch reads the clock at least once)."""
    a, b = await scripted_server(), await scripted_server()
    plan = RunPlan(v1=Endpoint(a.url), v2=Endpoint(b.url), spec=RequestSpec(), setup="s",
                   seed=3, interval=0.0, duration=0.5, concurrency=concurrency)
    store = Store(tmp_path / "log.jsonl", tmp_path / "log.state")
    store.open()
    clock = TickClock(0.01)
    try:
        outcome = await asyncio.wait_for(
            Runner(plan, PROMPTS, store, NullProgress(), clock=clock).run(), 120)
    finally:
        store.close()
    assert outcome.reason == "reached the duration"
    assert 1 <= outcome.rounds <= 50 and a.count == outcome.rounds
    assert [r["round"] for r in read_log(tmp_path / "log.jsonl")] == \
        list(range(1, outcome.rounds + 1))


async def test_concurrency_commits_in_order(tmp_path: Path, scripted_server: Any) -> None:
    a = await scripted_server(reply=lambda body: "x" * (len(str(body)) % 7))
    b = await scripted_server(reply=lambda body: "x" * (len(str(body)) % 7))
    log = await burn(tmp_path, a.url, b.url, rounds=40, concurrency=8)
    assert [r["round"] for r in log] == list(range(1, 41))
    assert [r["cursor"] for r in log] == list(range(40))


class SlowStore(Store):
    """A store whose commits take ``delay`` seconds (a slow disk), recording each batch,
    the thread it ran on and the rounds already played meanwhile."""

    def __init__(self, *args: Any, delay: float = 0.05, fail_at: int | None = None,
                 gate: Any = None) -> None:
        super().__init__(*args)
        self.delay, self.fail_at, self.gate = delay, fail_at, gate
        self.batches: list[list[int]] = []
        self.threads: set[str] = set()

    def append_many(self, records: list[dict[str, Any]]) -> None:
        import threading
        import time

        from shadow_burnin.errors import StorageError

        self.threads.add(threading.current_thread().name)
        if self.gate is not None:
            self.gate.wait(10)
        time.sleep(self.delay)
        rounds = [r["round"] for r in records if r.get("kind", "round") == "round"]
        if self.fail_at is not None and self.fail_at in rounds:
            raise StorageError("disk full (injected)")
        super().append_many(records)
        self.batches.append(rounds)


class CountingProgress(NullProgress):
    def __init__(self) -> None:
        self.shown: list[tuple[int, int]] = []  # (record round, state.last_round)

    def round_done(self, record: dict[str, Any], state: Any) -> None:
        self.shown.append((record["round"], state.last_round))


async def test_commits_run_off_the_event_loop_and_group(tmp_path: Path,
                                                        scripted_server: Any) -> None:
    # each commit takes 50 ms; the rounds (instant) keep being played meanwhile, so the
    # commits group many rounds, in order, and a round is shown only once committed
    a, b = await scripted_server(), await scripted_server()
    plan = RunPlan(v1=Endpoint(a.url), v2=Endpoint(b.url), spec=RequestSpec(), setup="s",
                   seed=3, interval=0.0, rounds=60, concurrency=4)
    store = SlowStore(tmp_path / "log.jsonl", tmp_path / "log.state", delay=0.05)
    store.open()
    progress = CountingProgress()
    try:
        outcome = await Runner(plan, PROMPTS, store, progress).run()
    finally:
        store.close()
    assert outcome.rounds == 60
    assert [n for batch in store.batches for n in batch] == list(range(1, 61))
    assert len(store.batches) < 30 and max(map(len, store.batches)) > 2
    assert store.threads == {"shadow-burnin-commit_0"}
    assert [n for n, _ in progress.shown] == list(range(1, 61))
    assert all(last >= n for n, last in progress.shown)
    assert [r["round"] for r in read_log(tmp_path / "log.jsonl")] == list(range(1, 61))
    state = orjson.loads((tmp_path / "log.state").read_bytes())
    assert state["last_round"] == 60
    assert state["log_size"] == (tmp_path / "log.jsonl").stat().st_size


async def test_a_stalled_disk_stops_new_rounds(tmp_path: Path, scripted_server: Any,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from shadow_burnin.io.run import runner as runner_mod

    monkeypatch.setattr(runner_mod, "BACKLOG", 8)
    a, b = await scripted_server(), await scripted_server()
    plan = RunPlan(v1=Endpoint(a.url), v2=Endpoint(b.url), spec=RequestSpec(), setup="s",
                   seed=3, interval=0.0, rounds=100, concurrency=2)
    gate = threading.Event()
    store = SlowStore(tmp_path / "log.jsonl", tmp_path / "log.state", delay=0.0, gate=gate)
    store.open()
    try:
        task = asyncio.create_task(Runner(plan, PROMPTS, store, NullProgress()).run())
        # the first commit hangs on the gate: rounds are played until the backlog (8) is
        # full, then none; poll (bounded) until 8 were played, then give the loop many
        # more turns: still no more than 8 + the 2 in flight
        for _ in range(2000):
            if a.count >= 8:
                break
            await asyncio.sleep(0.005)
        assert a.count >= 8
        for _ in range(500):
            await asyncio.sleep(0)
        assert a.count <= 8 + 2
        gate.set()
        outcome = await asyncio.wait_for(task, 30)
    finally:
        store.close()
    assert outcome.rounds == 100
    assert [r["round"] for r in read_log(tmp_path / "log.jsonl")] == list(range(1, 101))


async def test_storage_error_in_the_commit_thread_stops_the_run(tmp_path: Path,
                                                                scripted_server: Any) -> None:
    from shadow_burnin.errors import StorageError

    a, b = await scripted_server(), await scripted_server()
    plan = RunPlan(v1=Endpoint(a.url), v2=Endpoint(b.url), spec=RequestSpec(), setup="s",
                   seed=3, interval=0.0, rounds=200, concurrency=4)
    store = SlowStore(tmp_path / "log.jsonl", tmp_path / "log.state", delay=0.005,
                      fail_at=20)
    store.open()
    runner = Runner(plan, PROMPTS, store, NullProgress())
    try:
        with pytest.raises(StorageError):
            await runner.run()
    finally:
        store.close()
    assert runner._reason == "storage error"
    log = read_log(tmp_path / "log.jsonl")
    assert [r["round"] for r in log] == list(range(1, len(log) + 1)) and len(log) < 20
    assert rebuild_state(tmp_path / "log.jsonl").last_round == store.state.last_round
