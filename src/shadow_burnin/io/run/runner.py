"""The burn-in loop: a fixed schedule of rounds, each prompt sent to v1 and v2.

Rounds start on a fixed grid (``t0 + k·interval``): no drift over days and no burst to
catch up after a slow round. ``rounds`` and ``duration`` hold for every interval and
concurrency: a round is launched only while fewer than ``rounds`` were launched and the
later of its slot time and the clock is before the deadline (with interval 0 every slot
time is ``t0``, so the clock decides). The clock is injectable (tests).

By default the two requests of a round go one after the other, alternating which side
goes first; ``concurrent`` sends both at once. Up to ``concurrency`` rounds may be in
flight; they are committed to the log strictly in order, so the log's round numbers
never have a gap. The runner knows nothing of terminals: it reports to a ``Progress``
object passed in.

Commits (log write + fsync, state temp file + fsync + rename) run in one worker thread,
one at a time, so the event loop keeps playing rounds during the fsyncs; every round
that finished meanwhile goes into the next commit (group commit). A round is counted
and shown only once its commit returned. At most ``BACKLOG`` (or 4 × concurrency)
launched rounds may be waiting for their commit: a stalled disk stops new rounds
instead of growing memory.

Before a batch is written, each observer may *screen* its rounds in order (the halt
watch feeds its detector there): a round that must end the run (a halt with action
``stop``) is the last one written; the rounds after it, finished or in flight, are
abandoned, so no round after it is logged. The log holds exactly one line per round;
events go to ``<log>.events.jsonl`` through the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import msgspec

from shadow_burnin.core.prompt import Prompt
from shadow_burnin.core.rounds import build_round
from shadow_burnin.core.schedule import Schedule
from shadow_burnin.io.clock import now_iso
from shadow_burnin.io.http.client import Endpoint, RequestSpec, SideClient
from shadow_burnin.io.log.store import State, Store


class Progress(Protocol):
    """What the runner tells the outside world (a terminal panel, a log line, nothing)."""

    def started(self, state: State, target: int | None) -> None: ...
    def round_done(self, record: dict[str, Any], state: State) -> None: ...
    def warn(self, message: str) -> None: ...
    def stopped(self, reason: str, state: State) -> None: ...


class RoundContext(msgspec.Struct, frozen=True):
    """What a round step may use: the prompt, both clients and the resolved models."""

    prompt: Prompt
    v1: SideClient
    v2: SideClient
    models: dict[str, str | None]


class RoundStep(Protocol):
    """Enriches a finished round before it is committed (e.g. forensics: re-fire,
    token verdicts, the round's A/A pair under ``"aa"``): changes ``record`` in place.
    The round stays one record (one line of the log)."""

    async def __call__(self, record: dict[str, Any], ctx: RoundContext) -> None: ...


class CommitObserver(Protocol):
    """Sees every batch of rounds: ``screen`` before it is written, ``committed`` after.

    ``screen`` gets the batch's rounds in order and returns the index of a round that
    ends the run (it is the last one written: nothing after it is logged; the reason is
    ``stop_reason``), or None. ``committed`` gets the rounds written;
    ``stop(reason)`` there ends the run after the rounds in flight."""

    stop_reason: str | None

    def screen(self, rounds: list[dict[str, Any]]) -> int | None: ...

    def committed(self, records: list[dict[str, Any]], state: State,
                  stop: Callable[[str], None]) -> None: ...


class RunPlan(msgspec.Struct, frozen=True):
    v1: Endpoint
    v2: Endpoint
    spec: RequestSpec
    setup: str
    seed: int
    interval: float = 2.5
    rounds: int | None = None
    duration: float | None = None
    concurrent: bool = False
    concurrency: int = 1
    # ``run --replay``: the prompts once, in file order, prompt i launched at offset
    # ``replay[i]`` seconds (late launches are not skipped); None: the usual schedule
    replay: tuple[float, ...] | None = None


class RunOutcome(msgspec.Struct):
    rounds: int = 0
    reason: str = "done"
    models: dict[str, str | None] = msgspec.field(default_factory=dict)


BACKLOG = 1024  # launched rounds waiting for their commit, at most (or 4 × concurrency)

utc_now_iso = now_iso  # the log's timestamp of "now" (kept for callers of the old name)


class Runner:
    """Runs rounds until a limit or a signal; one instance per ``run`` invocation."""

    def __init__(
        self,
        plan: RunPlan,
        prompts: Sequence[Prompt],
        store: Store,
        progress: Progress,
        on_usr1: Callable[[], None] | None = None,
        steps: Sequence[RoundStep] = (),
        observers: Sequence[CommitObserver] = (),
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
    ) -> None:
        self.plan = plan
        self.prompts = list(prompts)
        self.store = store
        self.progress = progress
        self.on_usr1 = on_usr1
        self.steps = list(steps)
        self.observers = list(observers)
        self.schedule = Schedule([p.category for p in self.prompts], plan.seed)
        self._stop = asyncio.Event()
        self._signals = 0
        self._inflight: set[asyncio.Task[dict[str, Any]]] = set()  # still playing
        self.models: dict[str, str | None] = {}
        self._clock = clock  # seconds, monotonic (default: the event loop's clock)
        self._sleep = sleep  # waits on that clock (default: real time, cut by a stop)

    # -- signals --------------------------------------------------------------------
    def finish(self, reason: str) -> None:
        """Stop launching rounds; those in flight are finished and logged."""
        self._reason = reason
        self._stop.set()

    def request_stop(self, reason: str = "stopped") -> None:
        """A signal: the first finishes the rounds in flight, a second abandons them."""
        self._signals += 1
        self._reason = reason
        self._stop.set()
        if self._signals > 1:
            for task in self._inflight:
                task.cancel()

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> list[int]:
        installed: list[int] = []
        for sig, name in ((signal.SIGINT, "SIGINT"), (signal.SIGTERM, "SIGTERM")):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self.request_stop, name)
                installed.append(sig)
        if self.on_usr1 is not None:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signal.SIGUSR1, self.on_usr1)
                installed.append(signal.SIGUSR1)
        return installed

    # -- the loop -------------------------------------------------------------------
    async def run(self) -> RunOutcome:
        loop = asyncio.get_running_loop()
        installed = self._install_signals(loop)
        self._reason = "done"
        outcome = RunOutcome()
        self._io = ThreadPoolExecutor(1, thread_name_prefix="shadow-burnin-commit")
        try:
            secrets = (self.plan.v1.api_key, self.plan.v2.api_key)
            async with SideClient(self.plan.v1, self.plan.spec, secrets) as c1, \
                    SideClient(self.plan.v2, self.plan.spec, secrets) as c2:
                m1, m2 = await asyncio.gather(_resolve(c1), _resolve(c2))
                self.models = {"v1": m1, "v2": m2}
                outcome.models = dict(self.models)
                self.progress.started(self.store.state, self.plan.rounds)
                outcome.rounds = await self._loop(loop, c1, c2)
        finally:
            # a commit still running (the run was cancelled) finishes before the store
            # can be closed
            self._io.shutdown(wait=True)
            for sig in installed:
                loop.remove_signal_handler(sig)
        outcome.reason = self._reason
        self.progress.stopped(outcome.reason, self.store.state)
        return outcome

    async def _loop(self, loop: asyncio.AbstractEventLoop, c1: SideClient,
                    c2: SideClient) -> int:
        plan = self.plan
        now = self._clock or loop.time
        self._now = now
        self._pending: deque[asyncio.Task[dict[str, Any]] | None] = deque()
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()  # set after each commit
        self._closed = 0  # launched rounds committed or abandoned
        committer = asyncio.create_task(self._commit())
        base_round = self.store.state.last_round
        base_cursor = self.store.state.cursor
        backlog = max(BACKLOG, 4 * plan.concurrency)
        t0 = now()
        deadline = t0 + plan.duration if plan.duration else None
        slots = asyncio.Semaphore(plan.concurrency)
        inflight = self._inflight

        def done(task: asyncio.Task[dict[str, Any]]) -> None:
            inflight.discard(task)
            slots.release()

        launched = 0
        k = 0
        try:
            while not self._stop.is_set():
                if plan.rounds is not None and launched >= plan.rounds:
                    self._reason = f"reached {plan.rounds} round{'' if plan.rounds == 1 else 's'}"
                    break
                while launched - self._closed >= backlog and not committer.done() \
                        and not self._stop.is_set():
                    self._drained.clear()
                    await self._drained.wait()  # the disk is behind: wait for a commit
                if plan.replay is not None and base_cursor + launched >= len(plan.replay):
                    self._reason = "replayed the whole file"
                    break
                await slots.acquire()
                slot_time = t0 + k * plan.interval
                late = now() - slot_time
                if plan.replay is not None:
                    at = plan.replay
                    slot_time = t0 + at[base_cursor + launched] - at[min(base_cursor, len(at) - 1)]
                elif plan.interval and late > min(0.05 * plan.interval, 0.05):
                    # a slow round overran its slot: skip to the next slot, never burst
                    k += math.ceil(late / plan.interval)
                    slot_time = t0 + k * plan.interval
                if deadline is not None and max(slot_time, now()) >= deadline:
                    # the later of the two: with interval 0 every slot time is t0
                    slots.release()
                    self._reason = "reached the duration"
                    break
                if await self._sleep_until(slot_time) or committer.done():
                    slots.release()
                    break
                launched += 1
                k += 1
                number = base_round + launched
                cursor = base_cursor + launched - 1
                prompt = self.prompts[cursor if plan.replay is not None
                                      else self.schedule.index(cursor)]
                task = asyncio.create_task(self._play(number, cursor, prompt, c1, c2))
                inflight.add(task)
                task.add_done_callback(done)
                self._enqueue(task)
        finally:
            self._enqueue(None)
            await committer
        return self._committed

    async def _sleep_until(self, when: float) -> bool:
        """Sleep until ``when``; True if a stop was requested meanwhile."""
        delay = when - self._now()
        if delay <= 0:
            await asyncio.sleep(0)  # let signals and finished rounds in (interval 0)
            return self._stop.is_set()
        if self._sleep is not None:
            await self._sleep(delay)
            return self._stop.is_set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), delay)
        return self._stop.is_set()

    def _enqueue(self, task: asyncio.Task[dict[str, Any]] | None) -> None:
        self._pending.append(task)
        self._wake.set()

    async def _commit(self) -> None:
        """Commit finished rounds strictly in launch order; every round already finished
        behind the head goes in the same write (group commit: one fsync for the batch)."""
        self._committed = 0
        pending = self._pending
        try:
            while True:
                while not pending:
                    self._wake.clear()
                    await self._wake.wait()
                head = pending[0]
                if head is None:
                    return
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait([head])
                batch: list[dict[str, Any]] = []
                while pending and pending[0] is not None and pending[0].done():
                    task = pending.popleft()
                    assert task is not None
                    if task.cancelled():
                        self._closed += 1
                        self._abandon_rest()
                        break
                    batch.append(task.result())
                cut = self._screen(batch)
                if cut is not None:
                    self._closed += len(batch) - cut - 1
                    del batch[cut + 1:]
                if batch:
                    await self._store_batch(batch)
                self._closed += len(batch)
                self._drained.set()
        finally:
            self._drained.set()

    def _screen(self, batch: list[dict[str, Any]]) -> int | None:
        """Let observers screen the batch; the index of the round that ends the run (the
        rest of the batch and every round after it are abandoned), or None."""
        cut: int | None = None
        for observer in self.observers:
            screen = getattr(observer, "screen", None)
            if screen is None:
                continue
            at = screen(batch if cut is None else batch[:cut + 1])
            if at is not None and (cut is None or at < cut):
                cut = at
                self._reason = getattr(observer, "stop_reason", None) or "stopped"
        if cut is not None:
            self._stop.set()
            self._abandon_rest()
            for t in list(self._inflight):
                t.cancel()
        return cut

    def _abandon_rest(self) -> None:
        """After an abandoned round nothing later may be logged (no gaps)."""
        while self._pending and self._pending[0] is not None:
            task = self._pending.popleft()
            assert task is not None
            task.cancel()
            self._closed += 1

    async def _store_batch(self, batch: list[dict[str, Any]]) -> None:
        before = self.store.state
        try:
            await asyncio.get_running_loop().run_in_executor(
                self._io, self.store.append_many, batch)
        except Exception:
            self._reason = "storage error"
            self._stop.set()
            for t in list(self._inflight):
                t.cancel()
            raise
        rounds = batch
        self._committed += len(rounds)
        state = self.store.state
        # each round is shown with the state as of that round (the batch is committed)
        view = before.copy() if len(rounds) > 1 else state
        for i, record in enumerate(rounds):
            if i == len(rounds) - 1:
                view = state
            else:
                view.apply(record)
            self.progress.round_done(record, view)
        for observer in self.observers:
            observer.committed(batch, self.store.state, self.finish)

    async def _play(self, number: int, cursor: int, prompt: Prompt, c1: SideClient,
                    c2: SideClient) -> dict[str, Any]:
        ts = now_iso()
        first = "v1" if number % 2 == 1 else "v2"
        m1, m2 = self.models.get("v1"), self.models.get("v2")
        if self.plan.concurrent:
            r1, r2 = await asyncio.gather(c1.complete(prompt, m1), c2.complete(prompt, m2))
        elif first == "v1":
            r1 = await c1.complete(prompt, m1)
            r2 = await c2.complete(prompt, m2)
        else:
            r2 = await c2.complete(prompt, m2)
            r1 = await c1.complete(prompt, m1)
        record = build_round(number, ts, prompt, r1, r2,
                             first="both" if self.plan.concurrent else first,
                             setup=self.plan.setup, seed=self.plan.seed,
                             cursor=cursor).to_json()
        ctx = RoundContext(prompt, c1, c2, self.models)
        for step in self.steps:
            await step(record, ctx)
        return record


async def _resolve(client: SideClient) -> str | None:
    if client.endpoint.model:
        return client.endpoint.model
    models = await client.list_models()
    return models[0] if models else None

