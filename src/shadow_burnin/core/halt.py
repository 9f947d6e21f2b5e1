"""The no-match spike halt: a sliding window over round timestamps (pure).

The window ending at a round that started at ``t`` holds the parity rounds (both sides
replied) that started in ``(t − window, t]`` — and, after an acknowledgement, only those
that started after it, so an ``ack-halt`` does not re-trigger on the rounds it just
forgave. When the window holds at least ``min_rounds`` parity rounds and its no-match
share is above ``threshold``, a halt is raised. A raised halt stays active until it is
acknowledged; the detector does not raise another meanwhile.

Times are the log's round timestamps (epoch seconds), never the clock, so the same log
always gives the same halts. The halt and its acknowledgement are logged as event
records; :func:`halt_status` folds them back.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

HALT_EVENT = "halt"
ACK_EVENT = "ack-halt"
_PARITY = {"exact", "prefix-only", "no-match"}


@dataclass(frozen=True)
class HaltConfig:
    window_s: float = 3600.0
    min_rounds: int = 30
    threshold: float = 0.20
    worst: int = 5


@dataclass(frozen=True)
class WindowFigures:
    since: float
    until: float
    parity_rounds: int
    no_match: int

    @property
    def rate(self) -> float:
        return self.no_match / self.parity_rounds if self.parity_rounds else 0.0


@dataclass(frozen=True)
class HaltTrigger:
    """A halt raised at ``round`` (its timestamp ``ts``), with the window behind it."""

    round: int
    ts: str
    window: WindowFigures
    threshold: float
    window_s: float
    worst_prompts: list[dict[str, Any]] = field(default_factory=list)

    def to_event(self, action: str) -> dict[str, Any]:
        w = self.window
        return {
            "kind": "event", "event": HALT_EVENT, "ts": self.ts, "round": self.round,
            "action": action,
            "window": {"seconds": self.window_s, "since": iso(w.since), "until": iso(w.until),
                       "parity_rounds": w.parity_rounds, "no_match": w.no_match,
                       "rate": round(w.rate, 6), "threshold": self.threshold},
            "worst_prompts": self.worst_prompts,
        }


def iso(t: float) -> str:
    """Epoch seconds → ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (the log's timestamp format)."""
    d = datetime.fromtimestamp(t, UTC)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{d.microsecond // 1000:03d}Z"


def epoch(ts: str) -> float:
    return datetime.fromisoformat(ts).timestamp()


class HaltDetector:
    """Fed the committed rounds in order; says when a halt must be raised.

    ``active`` and ``since`` restore a detector after a restart (from the log's events):
    an active halt is not raised twice, and rounds before ``since`` (the last
    acknowledgement) are not counted.
    """

    def __init__(self, config: HaltConfig, *, active: bool = False,
                 since: float | None = None) -> None:
        self.config = config
        self.active = active
        self.since = since
        # (t, no_match, prompt_id, category) of the parity rounds in the window
        self._rounds: deque[tuple[float, bool, str, str]] = deque()
        self._no_match = 0

    def feed(self, record: Mapping[str, Any], t: float | None = None) -> HaltTrigger | None:
        """Fold one round record; a trigger when this round raises a halt."""
        if record.get("kind", "round") != "round":
            return None
        if t is None:
            t = epoch(record["ts"])
        if self.since is not None and t < self.since:
            return None
        if record.get("bucket") in _PARITY:
            nm = record["bucket"] == "no-match"
            self._rounds.append((t, nm, str(record.get("prompt_id", "")),
                                 str(record.get("category", ""))))
            self._no_match += nm
        self._expire(t)
        if self.active:
            return None
        n = len(self._rounds)
        cfg = self.config
        if n < cfg.min_rounds or self._no_match <= cfg.threshold * n:
            return None
        self.active = True
        since = max(t - cfg.window_s, self.since) if self.since is not None else t - cfg.window_s
        window = WindowFigures(since, t, n, self._no_match)
        return HaltTrigger(int(record.get("round", 0)), str(record["ts"]), window,
                           cfg.threshold, cfg.window_s, self._worst())

    def acknowledge(self, t: float) -> None:
        """An ``ack-halt`` at ``t``: clear the halt, count only rounds after ``t``."""
        self.active = False
        self.since = t if self.since is None else max(self.since, t)
        while self._rounds and self._rounds[0][0] < self.since:
            self._no_match -= self._rounds.popleft()[1]

    def window(self) -> WindowFigures | None:
        if not self._rounds:
            return None
        return WindowFigures(self._rounds[0][0], self._rounds[-1][0], len(self._rounds),
                             self._no_match)

    def _expire(self, t: float) -> None:
        edge = t - self.config.window_s
        rounds = self._rounds
        while rounds and rounds[0][0] <= edge:
            self._no_match -= rounds.popleft()[1]

    def _worst(self) -> list[dict[str, Any]]:
        seen: Counter[str] = Counter()
        bad: Counter[str] = Counter()
        category: dict[str, str] = {}
        for _t, nm, pid, cat in self._rounds:
            seen[pid] += 1
            bad[pid] += nm
            category[pid] = cat
        ranked = sorted((p for p in bad if bad[p]), key=lambda p: (-bad[p], p))
        return [{"prompt_id": p, "category": category[p], "no_match": bad[p],
                 "parity_rounds": seen[p]} for p in ranked[: self.config.worst]]


def detect(records: Iterable[Mapping[str, Any]], config: HaltConfig) -> list[HaltTrigger]:
    """Every halt a detector raises over these records, acknowledging each at once.

    What-if analysis of a whole log (tests, reports): which windows would have halted.
    """
    detector = HaltDetector(config)
    out: list[HaltTrigger] = []
    for record in records:
        trigger = detector.feed(record)
        if trigger is not None:
            out.append(trigger)
            detector.acknowledge(trigger.window.until + 1e-6)
    return out


@dataclass(frozen=True)
class HaltStatus:
    """What the log's events say: is a halt active, and since when."""

    active: bool = False
    halt: dict[str, Any] | None = None  # the active (or last) halt event
    last_ack: dict[str, Any] | None = None
    halts: int = 0
    acks: int = 0

    @property
    def since(self) -> float | None:
        """Epoch seconds of the last acknowledgement (rounds before it are forgiven)."""
        return epoch(self.last_ack["ts"]) if self.last_ack else None

    def to_json(self) -> dict[str, Any]:
        return {"active": self.active, "halt": self.halt, "last_ack": self.last_ack,
                "halts": self.halts, "acks": self.acks}


def halt_status(events: Iterable[Mapping[str, Any]]) -> HaltStatus:
    """Fold ``halt`` / ``ack-halt`` event records, in log order, into a status."""
    active, halt, ack, halts, acks = False, None, None, 0, 0
    for event in events:
        if event.get("kind") != "event":
            continue
        name = event.get("event")
        if name == HALT_EVENT:
            active, halt, halts = True, dict(event), halts + 1
        elif name == ACK_EVENT:
            active, ack, acks = False, dict(event), acks + 1
    return HaltStatus(active, halt, ack, halts, acks)


def ack_event(ts: str, reason: str, halt: Mapping[str, Any] | None,
              by: str | None = None) -> dict[str, Any]:
    """The ``ack-halt`` event record (``ts``: when it was acknowledged)."""
    event: dict[str, Any] = {"kind": "event", "event": ACK_EVENT, "ts": ts, "reason": reason,
                             "halt_round": halt.get("round") if halt else None,
                             "halt_ts": halt.get("ts") if halt else None}
    if by:
        event["by"] = by
    return event
