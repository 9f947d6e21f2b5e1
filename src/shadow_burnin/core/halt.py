"""The no-match (or regression) spike halt: a sliding window over round timestamps (pure).

What a round counts as bad is the rule's ``on``: ``"no-match"`` (the default, the
original runbook's rule: any no-match round) or ``"regression"`` (only no-match rounds
whose forensics verdict is ``regression``, i.e. flips outside what numeric noise
explains, ``core.verdict``). Everything else below is the same for both; "no-match"
stands for the counted rounds.

The window ending at a round that started at ``t`` holds the parity rounds (both sides
replied) that started in ``(t − window, t]`` — and, after an acknowledgement, only those
that started after it, so an ``ack-halt`` does not re-trigger on the rounds it just
forgave. When the window holds at least ``min_rounds`` parity rounds and its no-match
share is above ``threshold``, a halt is raised. A raised halt stays active until it is
acknowledged; the detector does not raise another meanwhile.

Memory is bounded whatever the round rate: the window is kept as at most
``SLOTS`` + 2 entries. Rounds that started in the same slot of a fixed grid (``window /
SLOTS`` wide: 1 s for the default hour) share one entry of counters, which leaves the
window when the newest of its rounds does; a slot's older rounds may so stay up to one
slot width longer than ``window``. A round alone in its slot (any run slower than one
round per slot, e.g. the default 2.5 s interval) is exact. An entry takes ~0.2 KB plus
12 bytes per prompt seen in its slot: a full window at 1 000 rounds/s is ~1.4 MB with 16
prompts, ~5 MB with 100 different prompts per second.

Times are the log's round timestamps (epoch seconds), never the clock, so the same log
always gives the same halts. The halt and its acknowledgement are logged as event
records; :func:`halt_status` folds them back.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from typing import Any

import msgspec

from shadow_burnin.core.records import RecordKind, is_round, record_kind
from shadow_burnin.core.timefmt import iso_ms

HALT_ON = ("no-match", "regression")  # what a halt counts ([halt] on)
HALT_EVENT = "halt"
ACK_EVENT = "ack-halt"
_PARITY = {"exact", "prefix-only", "no-match"}
SLOTS = 3600  # grid slots per window: bounds the detector's memory


class _Slot:
    """The parity rounds of one grid slot: counts, and per prompt (by its index in the
    detector) how many rounds and how many no-match. The newest slot keeps those in a
    dict; an older one packs them into 12 bytes per prompt (it is never added to again).
    """

    __slots__ = ("counts", "first", "key", "last", "n", "no_match")

    def __init__(self, key: int, t: float) -> None:
        self.key = key
        self.first = t
        self.last = t
        self.n = 0
        self.no_match = 0
        self.counts: dict[int, list[int]] | array[int] = {}

    def add(self, t: float, nm: bool, index: int) -> None:
        self.first = min(self.first, t)
        self.last = max(self.last, t)
        self.n += 1
        self.no_match += nm
        counts = self.counts
        assert isinstance(counts, dict)
        seen_bad = counts.get(index)
        if seen_bad is None:
            counts[index] = [1, int(nm)]
        else:
            seen_bad[0] += 1
            seen_bad[1] += nm

    def pack(self) -> None:
        if isinstance(self.counts, dict):
            flat = array("I")
            for index, (seen, bad) in self.counts.items():
                flat.extend((index, seen, bad))
            self.counts = flat

    def prompts(self) -> Iterator[tuple[int, int, int]]:
        """``(prompt index, rounds, no-match)`` per prompt seen in this slot."""
        counts = self.counts
        if isinstance(counts, dict):
            for index, (seen, bad) in counts.items():
                yield index, seen, bad
        else:
            for i in range(0, len(counts), 3):
                yield counts[i], counts[i + 1], counts[i + 2]


class HaltRule(msgspec.Struct, frozen=True):
    """The detector's parameters; their defaults are the ``[halt]`` section's defaults."""

    window_s: float = 3600.0
    min_rounds: int = 30
    threshold: float = 0.20
    worst: int = 5
    on: str = "no-match"  # HALT_ON: what a round counts as bad

    def counts(self, record: Mapping[str, Any]) -> bool:
        """Whether this parity round counts as bad under the rule."""
        if record.get("bucket") != "no-match":
            return False
        if self.on == "regression":
            fx = record.get("forensics")
            return isinstance(fx, Mapping) and fx.get("verdict") == "regression"
        return True


class WindowFigures(msgspec.Struct, frozen=True):
    since: float
    until: float
    parity_rounds: int
    no_match: int

    @property
    def rate(self) -> float:
        return self.no_match / self.parity_rounds if self.parity_rounds else 0.0


class HaltTrigger(msgspec.Struct, frozen=True):
    """A halt raised at ``round`` (its timestamp ``ts``), with the window behind it."""

    round: int
    ts: str
    window: WindowFigures
    threshold: float
    window_s: float
    worst_prompts: list[dict[str, Any]] = msgspec.field(default_factory=list)
    on: str = "no-match"

    def to_event(self, action: str) -> dict[str, Any]:
        """The halt event; the counted rounds are under ``no_match`` (or ``regression``
        with ``on = "regression"``), in the window and per worst prompt."""
        w = self.window
        key = counted_key(self.on)
        worst = [{(key if k == "no_match" else k): v for k, v in p.items()}
                 for p in self.worst_prompts]
        return {
            "kind": "event", "event": HALT_EVENT, "ts": self.ts, "round": self.round,
            "action": action,
            "window": {"seconds": self.window_s, "since": iso_ms(w.since), "until": iso_ms(w.until),
                       "parity_rounds": w.parity_rounds, key: w.no_match,
                       "rate": round(w.rate, 6), "threshold": self.threshold, "on": self.on},
            "worst_prompts": worst,
        }


def counted_key(on: str) -> str:
    """The event key of the counted rounds: ``no_match`` or ``regression``."""
    return on.replace("-", "_")


def epoch(ts: str) -> float:
    return datetime.fromisoformat(ts).timestamp()


class HaltDetector:
    """Fed the committed rounds in order; says when a halt must be raised.

    ``active`` and ``since`` restore a detector after a restart (from the log's events):
    an active halt is not raised twice, and rounds before ``since`` (the last
    acknowledgement) are not counted.
    """

    def __init__(self, config: HaltRule, *, active: bool = False,
                 since: float | None = None) -> None:
        self.config = config
        self.active = active
        self.since = since
        self._slot_s = max(config.window_s, 1e-9) / SLOTS
        # the parity rounds in the window, one entry per grid slot, oldest first
        self._slots: deque[_Slot] = deque()
        self._n = 0
        self._no_match = 0
        # prompt id → index (slots count by index); id and latest category by index
        self._index: dict[str, int] = {}
        self._ids: list[str] = []
        self._categories: list[str] = []
        self._sealed = False  # after an acknowledgement: the next round opens a new entry

    def feed(self, record: Mapping[str, Any], t: float | None = None) -> HaltTrigger | None:
        """Fold one round record; a trigger when this round raises a halt."""
        if not is_round(record):
            return None
        if t is None:
            t = epoch(record["ts"])
        if self.since is not None and t < self.since:
            return None
        if record.get("bucket") in _PARITY:
            self._add(t, self.config.counts(record), str(record.get("prompt_id", "")),
                      str(record.get("category", "")))
        self._expire(t)
        if self.active:
            return None
        n = self._n
        cfg = self.config
        if n < cfg.min_rounds or self._no_match <= cfg.threshold * n:
            return None
        self.active = True
        since = max(t - cfg.window_s, self.since) if self.since is not None else t - cfg.window_s
        window = WindowFigures(since, t, n, self._no_match)
        return HaltTrigger(int(record.get("round", 0)), str(record["ts"]), window,
                           cfg.threshold, cfg.window_s, self._worst(), cfg.on)

    def acknowledge(self, t: float) -> None:
        """An ``ack-halt`` at ``t``: clear the halt, count only rounds after ``t``.

        An entry holding any round before ``t`` is forgiven whole."""
        self.active = False
        self.since = t if self.since is None else max(self.since, t)
        slots = self._slots
        while slots and slots[0].first < self.since:
            self._drop(slots.popleft())
        self._sealed = True

    def window(self) -> WindowFigures | None:
        if not self._slots:
            return None
        return WindowFigures(self._slots[0].first, self._slots[-1].last, self._n,
                             self._no_match)

    def _add(self, t: float, nm: bool, prompt_id: str, category: str) -> None:
        key = math.floor(t / self._slot_s)
        slots = self._slots
        if slots and slots[-1].key == key and not self._sealed:
            slot = slots[-1]
        else:
            if slots:
                slots[-1].pack()
            slot = _Slot(key, t)
            slots.append(slot)
            self._sealed = False
        index = self._index.get(prompt_id)
        if index is None:
            index = self._index[prompt_id] = len(self._ids)
            self._ids.append(prompt_id)
            self._categories.append(category)
        else:
            self._categories[index] = category
        slot.add(t, nm, index)
        self._n += 1
        self._no_match += nm

    def _drop(self, slot: _Slot) -> None:
        self._n -= slot.n
        self._no_match -= slot.no_match
        if not self._slots:  # nothing refers to a prompt index any more
            self._index.clear()
            self._ids.clear()
            self._categories.clear()

    def _expire(self, t: float) -> None:
        edge = t - self.config.window_s
        slots = self._slots
        while slots and slots[0].last <= edge:
            self._drop(slots.popleft())

    def _worst(self) -> list[dict[str, Any]]:
        seen: Counter[int] = Counter()
        bad: Counter[int] = Counter()
        for slot in self._slots:
            for index, n, nm in slot.prompts():
                seen[index] += n
                bad[index] += nm
        ids, categories = self._ids, self._categories
        ranked = sorted((i for i in bad if bad[i]), key=lambda i: (-bad[i], ids[i]))
        return [{"prompt_id": ids[i], "category": categories[i], "no_match": bad[i],
                 "parity_rounds": seen[i]} for i in ranked[: self.config.worst]]


def detect(records: Iterable[Mapping[str, Any]], config: HaltRule) -> list[HaltTrigger]:
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


class HaltStatus(msgspec.Struct, frozen=True):
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
        if record_kind(event) is not RecordKind.EVENT:
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
