"""The halt watch: a runner ``CommitObserver`` around ``core.halt.HaltDetector``.

Before each batch of rounds is written it feeds them to the detector (``screen``), in
order. On a halt with ``action = "stop"`` it names the round that tripped it, and the
runner writes nothing after that round. Once the batch is written (``committed``) it
logs each ``halt`` event to ``<log>.events.jsonl`` (so ``gates`` and a restarted run see
it), shows a loud alert, and starts the ``on_halt`` command / webhook in the background
(logging each outcome as a ``halt-alert`` event).

Acknowledgements: ``ack-halt`` appends its event straight to ``<log>.events.jsonl``,
whether or not a run holds the log. The watch tails that file at each batch (the store
reads only its new bytes, ``Store.poll_events``) and acknowledges the detector.

It also keeps a ``DriftTracker`` and warns once when v2 slows down relative to v1.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson

from shadow_burnin.config_sections import HaltConfig
from shadow_burnin.core.drift import DriftTracker
from shadow_burnin.core.halt import ACK_EVENT, HaltDetector, epoch
from shadow_burnin.core.records import is_round
from shadow_burnin.io.clock import now_iso
from shadow_burnin.io.log.logread import log_events
from shadow_burnin.io.log.store import Store
from shadow_burnin.io.run.alerts import halt_message, send_all

__all__ = ["HaltWatch", "log_events", "now_iso", "tail_rounds"]

Say = Callable[[str], None]


# -- priming after a restart ------------------------------------------------------------
def tail_rounds(log: Path, span_s: float, chunk: int = 1 << 20) -> list[dict[str, Any]]:
    """The round records of the log's last ``span_s`` seconds, read from the end."""
    try:
        pos = log.stat().st_size
    except FileNotFoundError:
        return []
    data = b""
    newest: float | None = None
    with open(log, "rb") as fh:
        while pos > 0:
            start = max(0, pos - chunk)
            fh.seek(start)
            data = fh.read(pos - start) + data
            pos = start
            lines = data.split(b"\n")
            complete = lines[1:] if pos > 0 else lines  # the first may be cut
            if newest is None:
                newest = _round_ts(reversed(complete))
            oldest = _round_ts(complete)
            if newest is not None and oldest is not None and oldest <= newest - span_s:
                break
    records = []
    for line in (data.split(b"\n")[1:] if pos > 0 else data.split(b"\n")):
        with contextlib.suppress(orjson.JSONDecodeError):
            r = orjson.loads(line) if line.strip() else None
            if isinstance(r, dict) and is_round(r) and "ts" in r:
                records.append(r)
    if not records:
        return []
    cut = epoch(records[-1]["ts"]) - span_s
    return [r for r in records if epoch(r["ts"]) > cut]


def _round_ts(lines: Any) -> float | None:
    """The timestamp of the first parseable round record among ``lines``."""
    for line in lines:
        with contextlib.suppress(orjson.JSONDecodeError, KeyError, TypeError, ValueError,
                                 AttributeError):
            r = orjson.loads(line)
            if is_round(r):
                return epoch(r["ts"])
    return None


class HaltWatch:
    """Watches committed rounds for a no-match spike (see the module doc)."""

    def __init__(self, settings: HaltConfig, store: Store, *, loud: Say, warn: Say,
                 context: Mapping[str, Any] | None = None,
                 clock: Callable[[], str] = now_iso) -> None:
        self.settings = settings
        self.store = store
        self.loud = loud
        self.warn = warn
        self.context = dict(context or {})
        self.clock = clock
        self.detector = HaltDetector(settings.rule())
        self.drift = DriftTracker()
        self._drift_warned = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.halts: list[dict[str, Any]] = []
        self._raised: list[dict[str, Any]] = []  # screened, logged once committed
        self.stop_reason: str | None = None

    def prime(self) -> None:
        """Restore from the state's mirror of the log's events and the log's tail.

        The tail's rounds fill the window without raising anything; if the spike is
        still there, the next committed round raises the halt.
        """
        mirror = self.store.state.extra.get("halt") or {}
        ack = mirror.get("ack")
        self.detector.since = epoch(ack["ts"]) if isinstance(ack, dict) and "ts" in ack \
            else None
        self.detector.active = True
        for record in tail_rounds(self.store.log, self.settings.window):
            self.detector.feed(record)
        self.detector.active = bool(mirror.get("active"))

    # -- CommitObserver ------------------------------------------------------------------
    def screen(self, rounds: list[dict[str, Any]]) -> int | None:
        """Feed the rounds about to be written; the index of the round whose halt stops
        the run (with ``action = "stop"``), or None. Acks logged meanwhile count first."""
        self._take_acks(self.store.poll_events())
        for i, record in enumerate(rounds):
            self.drift.add(_latency(record, "v1"), _latency(record, "v2"))
            trigger = self.detector.feed(record)
            if trigger is None:
                continue
            event = trigger.to_event(self.settings.action)
            self._raised.append(event)
            if self.settings.action == "stop":
                self.stop_reason = f"halted at round {event['round']} (no-match spike)"
                return i
        return None

    def committed(self, records: list[dict[str, Any]], state: Any,
                  stop: Callable[[str], None]) -> None:
        raised, self._raised = self._raised, []
        for event in raised:
            self._raise(event)
        if not self._drift_warned and self.drift.count % 50 == 0 and self.drift.slowing():
            self._drift_warned = True
            self.warn(f"latency drift: v2's p95 gap over v1 grew by "
                      f"{self.drift.relative_drift_ms():.0f} ms between its first and last "
                      f"{self.drift.n} completions (see `bench`)")

    def _take_acks(self, events: list[dict[str, Any]]) -> None:
        acks = [e for e in events if e.get("event") == ACK_EVENT and "ts" in e]
        if not acks:
            return
        self.detector.acknowledge(epoch(str(acks[-1]["ts"])))
        self.warn(f"halt acknowledged: {acks[-1].get('reason')}")

    def _raise(self, event: dict[str, Any]) -> None:
        self._take_acks(self.store.append_events([event]))
        self.halts.append(event)
        self.loud(halt_message(event))
        s = self.settings
        if s.on_halt or s.webhook:
            task = asyncio.get_running_loop().create_task(self._alert(event))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _alert(self, event: dict[str, Any]) -> None:
        s = self.settings
        outcomes = await send_all(event, self.context, command=s.on_halt, webhook=s.webhook,
                                  timeout_s=s.webhook_timeout)
        records = []
        for o in outcomes:
            if not o.ok:
                self.warn(f"halt alert ({o.channel}) failed: {o.detail}")
            records.append({"kind": "event", "event": "halt-alert", "ts": self.clock(),
                            "round": event.get("round"), "channel": o.channel, "ok": o.ok,
                            "detail": o.detail or None})
        with contextlib.suppress(Exception):  # the store may be closing: never fatal
            self._take_acks(self.store.append_events(records))

    async def drain(self, timeout_s: float | None = None) -> None:
        """Wait for the alerts still running (called before the store closes)."""
        if self._tasks:
            limit = timeout_s if timeout_s is not None else self.settings.webhook_timeout + 5
            await asyncio.wait(set(self._tasks), timeout=limit)


def _latency(record: Mapping[str, Any], side: str) -> float | None:
    reply = record.get(side) or {}
    if reply.get("error") is not None or reply.get("text") is None:
        return None
    value = reply.get("latency_ms")
    return float(value) if isinstance(value, int | float) else None
