"""Every scripted-server fault, one round at a time, through the runner: the faulted round
is ``v2-unreachable`` with the fault's own error code, the next round is normal, the run
never stops, and the process's memory stays flat over repeated cycles.

Which request gets the fault is decided without timing: v1 is a scripted server that
awaits a hook before answering its n-th completion request (= round n, one round in
flight). Rounds 4k+1 are odd, so v1 is asked first: the hook arms v2's fault for exactly
the request that follows. ``refuse`` (stop listening) is not per request: it also covers
round 4k+2 (v2 goes first in even rounds) and is lifted by that round's v1 hook.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from shadow_burnin.core.prompt import Prompt
from shadow_burnin.io.http.client import Endpoint, RequestSpec
from shadow_burnin.io.log.store import State, Store
from shadow_burnin.io.run.runner import Runner, RunPlan
from tests.servers.faults import FAULTS
from tests.servers.scripted import ScriptedServer

CODE = {  # fault -> the error code the round must carry for v2
    "refuse": "connection-refused", "reset-after-headers": "connection-reset",
    "reset-mid-body": "connection-reset", "sse-cut": "stream-cut",
    "sse-no-done": "stream-incomplete", "http-500": "http-500", "http-502": "http-502",
    "http-503": "http-503", "http-429": "http-429", "invalid-json": "invalid-json",
    "no-choices": "bad-shape", "null-content": "bad-shape", "invalid-utf8": "invalid-utf8",
    "huge": "too-large", "drip": "timeout", "hang": "timeout", "redirect": "redirect",
}
CYCLES = 3
PER_CYCLE = 4 * len(FAULTS)
PROMPTS = [Prompt(id=f"p{i}", category=f"c{i % 2}", prompt=f"question {i} — é") for i in range(5)]


class HookedServer(ScriptedServer):
    """A scripted server that awaits ``hook(n)`` before handling completion request n."""

    def __init__(self, hook: Callable[[int], Awaitable[None]], **options: Any) -> None:
        super().__init__(**options)
        self.hook = hook

    async def _complete(self, request: web.BaseRequest, api: str) -> web.StreamResponse:
        await self.hook(self.count + 1)
        return await super()._complete(request, api)


def rss_kb() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))


class Sampler:
    """Progress that samples this process's RSS at the end of every cycle."""

    def __init__(self) -> None:
        self.rss: list[int] = []

    def started(self, state: State, target: int | None) -> None: ...
    def warn(self, message: str) -> None: ...
    def stopped(self, reason: str, state: State) -> None: ...

    def round_done(self, record: dict[str, Any], state: State) -> None:
        if record["round"] % PER_CYCLE == 0:
            self.rss.append(rss_kb())


async def test_every_fault_through_the_runner(tmp_path: Path) -> None:
    assert set(CODE) == set(FAULTS), "a new fault needs its expected code here"
    v2 = ScriptedServer(huge_bytes=3 << 20, drip_interval_s=0.5)
    planned: dict[int, str] = {}  # round -> fault v2 had for it

    async def hook(n: int) -> None:
        k, phase = divmod(n - 1, 4)
        if phase == 0:
            fault = FAULTS[k % len(FAULTS)]
            planned[n] = fault
            if fault == "refuse":
                await v2.set_fault("refuse")
                planned[n + 1] = fault
            else:
                await v2.set_fault(fault, times=1)
        elif phase == 1 and planned.get(n) == "refuse":
            await v2.set_fault(None)

    v1 = HookedServer(hook)
    await v1.start()
    await v2.start()
    store = Store(tmp_path / "f.jsonl", tmp_path / "f.state")
    store.open()
    sampler = Sampler()
    plan = RunPlan(v1=Endpoint(v1.url, "m"), v2=Endpoint(v2.url, "m"),
                   spec=RequestSpec(timeout_s=3.0, max_reply_bytes=1 << 20), setup="faults",
                   seed=5, interval=0.0, rounds=CYCLES * PER_CYCLE)
    try:
        outcome = await Runner(plan, PROMPTS, store, sampler).run()
    finally:
        store.close()
        await v1.stop()
        await v2.stop()
    assert outcome.rounds == CYCLES * PER_CYCLE, outcome.reason
    rounds = [orjson.loads(x) for x in (tmp_path / "f.jsonl").read_bytes().splitlines()]
    assert [r["round"] for r in rounds] == list(range(1, CYCLES * PER_CYCLE + 1))
    for r in rounds:
        fault = planned.get(r["round"])
        assert r["v1"]["error"] is None, r
        if fault is None:
            assert r["bucket"] == "exact" and r["v2"]["error"] is None, r
            continue
        code = (r["v2"]["error"] or "").split(":", 1)[0]
        assert (r["bucket"], code) == ("v2-unreachable", CODE[fault]), (fault, r["v2"])
    faulted = sorted(planned)
    # the round after a fault (rounds[n] is round n + 1) is a normal one
    assert all(rounds[n]["bucket"] == "exact" for n in faulted if n + 1 not in planned)
    assert len(faulted) == CYCLES * (len(FAULTS) + 1)  # refuse covers two rounds
    grown_mb = (max(sampler.rss[1:]) - sampler.rss[0]) / 1024
    assert len(sampler.rss) == CYCLES and grown_mb < 20, sampler.rss
