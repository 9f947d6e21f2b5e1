"""The liveness watch inside ``run``: ``core.liveness.LivenessMonitor`` on the event loop.

It is a runner ``CommitObserver`` (each committed batch: a stall ends, the spike window
moves) plus a background task that wakes every ``tick`` to see whether the stall time has
passed with no commit — the one thing a commit cannot tell. Each alert or recovery is
appended to ``<log>.events.jsonl`` as a ``liveness`` event, printed as a warning, and sent
through the halt's alert channel (``[halt] on_halt`` command and/or ``webhook``, the
``io.run.alerts`` helpers); each outcome is logged as a ``liveness-alert`` event. Nothing
here can stop the burn-in: a failing command or webhook is a warning.

Both the clock (epoch seconds) and the tick (an awaitable) are injectable, so tests move
time and wake the watch without sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from shadow_burnin.config_sections import AlertsConfig, HaltConfig
from shadow_burnin.core.liveness import LivenessMonitor
from shadow_burnin.io.clock import now_iso
from shadow_burnin.io.log.events import append_events
from shadow_burnin.io.run.alerts import send_liveness

Say = Callable[[str], None]
EVENT = "liveness"
OUTCOME_EVENT = "liveness-alert"


def tick_every(seconds: float) -> Callable[[], Awaitable[None]]:
    """The default tick: real time, often enough to see a stall within a tenth of it."""
    async def tick() -> None:
        await asyncio.sleep(seconds)
    return tick


class LivenessWatch:
    """Stall and unreachable-spike alerts for one run (see the module doc)."""

    stop_reason: str | None = None  # never stops the run

    def __init__(self, settings: AlertsConfig, channel: HaltConfig, log: Path, *,
                 warn: Say, context: Mapping[str, Any] | None = None,
                 clock: Callable[[], float] = time.time,
                 tick: Callable[[], Awaitable[None]] | None = None,
                 stamp: Callable[[], str] = now_iso) -> None:
        self.settings = settings
        self.channel = channel
        self.log = log
        self.warn = warn
        self.context = dict(context or {})
        self.clock = clock
        self.stamp = stamp
        rule = settings.rule()
        self.tick = tick or tick_every(max(0.5, min(30.0, rule.stall_s / 10)))
        self.monitor = LivenessMonitor(rule)
        self.sent: list[dict[str, Any]] = []  # every alert and recovery, in order
        self._task: asyncio.Task[None] | None = None
        self._alerts: set[asyncio.Task[None]] = set()
        self._in_order = asyncio.Lock()  # one alert at a time: a recovery never overtakes

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Start the stall clock now and the background check (inside the event loop)."""
        self.monitor.start(self.clock())
        self._task = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            await self.tick()
            self._emit(self.monitor.check(self.clock()))

    async def close(self, timeout_s: float | None = None) -> None:
        """Stop checking; wait for the alerts still being sent (before the store closes)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._alerts:
            limit = timeout_s if timeout_s is not None else self.channel.webhook_timeout + 5
            await asyncio.wait(set(self._alerts), timeout=limit)

    # -- CommitObserver -------------------------------------------------------------------
    def screen(self, rounds: list[dict[str, Any]]) -> int | None:
        return None

    def committed(self, records: list[dict[str, Any]], state: Any,
                  stop: Callable[[str], None]) -> None:
        buckets = [str(r.get("bucket")) for r in records]
        self._emit(self.monitor.committed(self.clock(), buckets))

    # -- alerts ---------------------------------------------------------------------------
    def _emit(self, alerts: list[dict[str, Any]]) -> None:
        for alert in alerts:
            self.sent.append(alert)
            self.warn(alert["text"])
            task = asyncio.get_running_loop().create_task(self._send(alert))
            self._alerts.add(task)
            task.add_done_callback(self._alerts.discard)

    async def _send(self, alert: dict[str, Any]) -> None:
        async with self._in_order:  # FIFO: the tasks queue in the order of the alerts
            await self._send_one(alert)

    async def _send_one(self, alert: dict[str, Any]) -> None:
        event = {"kind": "event", "event": EVENT, "ts": self.stamp(), **_fields(alert)}
        records = [event]
        with contextlib.suppress(Exception):  # the log's directory may be going: never fatal
            await asyncio.to_thread(append_events, self.log, [event])
            records = []
        c = self.channel
        outcomes = await send_liveness(alert, self.context, command=c.on_halt,
                                       webhook=c.webhook, timeout_s=c.webhook_timeout)
        for o in outcomes:
            if not o.ok:
                self.warn(f"liveness alert ({o.channel}) failed: {o.detail}")
            records.append({"kind": "event", "event": OUTCOME_EVENT, "ts": self.stamp(),
                            "alert": alert["kind"], "channel": o.channel, "ok": o.ok,
                            "detail": o.detail or None})
        if records:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(append_events, self.log, records)


def _fields(alert: Mapping[str, Any]) -> dict[str, Any]:
    """The alert as event fields: its kind under ``alert`` (``kind`` is the record's)."""
    return {("alert" if k == "kind" else k): v for k, v in alert.items()}
