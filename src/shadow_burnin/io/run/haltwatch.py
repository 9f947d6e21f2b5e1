"""The halt watch: a runner ``CommitObserver`` around ``core.halt.HaltDetector``.

After every committed batch it feeds the new rounds to the detector. On a halt it logs a
``halt`` event (so ``gates`` and a restarted run see it), shows a loud alert, starts the
``on_halt`` command / webhook in the background (logging each outcome as a
``halt-alert`` event) and, with ``action = "stop"``, ends the run.

Acknowledgements: the running burn-in holds the log's lock, so ``ack-halt`` cannot
append. It drops a request file ``<log>.ack-halt.<id>.json`` beside the log instead; the
watch picks it up at the next commit, logs the ``ack-halt`` event and removes the file.
When no run holds the lock, ``ack-halt`` logs the event itself.

It also keeps a ``DriftTracker`` and warns once when v2 slows down relative to v1.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from shadow_burnin.config_sections import HaltConfig as HaltSettings
from shadow_burnin.core.drift import DriftTracker
from shadow_burnin.core.halt import HaltConfig, HaltDetector, ack_event, epoch
from shadow_burnin.io.log.store import Store
from shadow_burnin.io.run.alerts import halt_message, send_all

Say = Callable[[str], None]


def now_iso() -> str:
    d = datetime.now(UTC)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"


# -- the ack inbox ------------------------------------------------------------------
def inbox_glob(log: Path) -> str:
    return f"{log.name}.ack-halt.*.json"


def drop_ack_request(log: Path, reason: str, by: str | None, ts: str) -> Path:
    """Leave an acknowledgement for the running burn-in (atomic: temp file + rename)."""
    stamp = f"{os.getpid()}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%f')}"
    final = log.with_name(f"{log.name}.ack-halt.{stamp}.json")
    tmp = final.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps({"reason": reason, "by": by, "ts": ts}))
    os.replace(tmp, final)
    return final


def take_ack_requests(log: Path) -> list[dict[str, Any]]:
    """Claim and read every pending request (oldest first); the files are removed."""
    out = []
    for path in sorted(log.parent.glob(inbox_glob(log))):
        try:
            request = orjson.loads(path.read_bytes())
            path.unlink()
        except (OSError, orjson.JSONDecodeError):
            continue
        if isinstance(request, dict) and isinstance(request.get("reason"), str):
            out.append(request)
    return sorted(out, key=lambda r: str(r.get("ts", "")))


def log_events(log: Path) -> list[dict[str, Any]]:
    """The event records of a log, in order (a quick pass: only event lines are parsed)."""
    out = []
    try:
        fh = open(log, "rb")  # noqa: SIM115 (closed below)
    except FileNotFoundError:
        return []
    with fh:
        for line in fh:
            if b'"kind":"event"' in line and line.endswith(b"\n"):
                with contextlib.suppress(orjson.JSONDecodeError):
                    record = orjson.loads(line)
                    if isinstance(record, dict) and record.get("kind") == "event":
                        out.append(record)
    return out


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
            if isinstance(r, dict) and r.get("kind", "round") == "round" and "ts" in r:
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
            if r.get("kind", "round") == "round":
                return epoch(r["ts"])
    return None


class HaltWatch:
    """Watches committed rounds for a no-match spike (see the module doc)."""

    def __init__(self, settings: HaltSettings, store: Store, *, loud: Say, warn: Say,
                 context: Mapping[str, Any] | None = None,
                 clock: Callable[[], str] = now_iso) -> None:
        self.settings = settings
        self.store = store
        self.loud = loud
        self.warn = warn
        self.context = dict(context or {})
        self.clock = clock
        self.detector = HaltDetector(HaltConfig(settings.window, settings.min_rounds,
                                                settings.threshold, settings.worst))
        self.drift = DriftTracker()
        self._drift_warned = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.halts: list[dict[str, Any]] = []

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
    def committed(self, records: list[dict[str, Any]], state: Any,
                  stop: Callable[[str], None]) -> None:
        self._take_acks()
        for record in records:
            if record.get("kind", "round") != "round":
                continue
            self.drift.add(_latency(record, "v1"), _latency(record, "v2"))
            trigger = self.detector.feed(record)
            if trigger is not None:
                self._raise(trigger.to_event(self.settings.action), stop)
        if not self._drift_warned and self.drift.count % 50 == 0 and self.drift.slowing():
            self._drift_warned = True
            self.warn(f"latency drift: v2's p95 gap over v1 grew by "
                      f"{self.drift.relative_drift_ms():.0f} ms between its first and last "
                      f"{self.drift.n} completions (see `bench`)")

    def _take_acks(self) -> None:
        requests = take_ack_requests(self.store.log)
        if not requests:
            return
        halt = (self.store.state.extra.get("halt") or {}).get("event")
        events = [ack_event(r.get("ts") or self.clock(), r["reason"], halt, r.get("by"))
                  for r in requests]
        self.store.append_many(events)
        self.detector.acknowledge(epoch(events[-1]["ts"]))
        self.warn(f"halt acknowledged: {events[-1]['reason']}")

    def _raise(self, event: dict[str, Any], stop: Callable[[str], None]) -> None:
        self.store.append_many([event])
        self.halts.append(event)
        self.loud(halt_message(event))
        s = self.settings
        if s.on_halt or s.webhook:
            task = asyncio.get_running_loop().create_task(self._alert(event))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if s.action == "stop":
            stop(f"halted at round {event['round']} (no-match spike)")

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
            self.store.append_many(records)

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
