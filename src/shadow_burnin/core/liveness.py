"""Liveness: what the no-match halt does not cover — a burn-in that stopped committing
rounds, or a side that stopped answering. Pure: the caller passes times and buckets.

The one rule (``status --alert`` and the watcher inside ``run`` both apply it):

- **stall** — no round committed for ``stall_s`` seconds (counted from the last
  committed round, or from the start of the watch when there is none yet);
- **unreachable spike** on side X — at least ``spike_rounds`` of the last
  ``spike_window`` rounds are ``X-unreachable`` or ``both-unreachable``.

``conditions`` says which hold now (stateless: ``status``). ``LivenessMonitor`` turns them
into episodes (the watcher): an alert when a condition starts, nothing while it lasts,
one recovery when it ends — a stall ends with the next committed round, a spike once at
most half of ``spike_rounds`` of the last ``spike_window`` rounds are down (hysteresis,
so a side hovering at the threshold does not flap).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from shadow_burnin.core.records import SIDES
from shadow_burnin.core.timefmt import iso_s

STALL = "stall"
SPIKE = "unreachable-spike"


class LivenessRule(msgspec.Struct, frozen=True):
    """``[alerts]``: ``stall`` seconds (0: never), and the spike's N of the last M."""

    stall_s: float = 600.0
    spike_window: int = 20
    spike_rounds: int = 10

    def __post_init__(self) -> None:
        if not self.stall_s >= 0:
            raise ValueError(f"alerts.stall must be >= 0, got {self.stall_s}")
        if self.spike_window < 1:
            raise ValueError(f"alerts.spike_window must be >= 1, got {self.spike_window}")
        if not 1 <= self.spike_rounds <= self.spike_window:
            raise ValueError(f"alerts.spike_rounds must be in [1, spike_window="
                             f"{self.spike_window}], got {self.spike_rounds}")


def side_down(bucket: str, side: str) -> bool:
    """Whether a round's bucket says ``side`` did not answer."""
    return bucket in (f"{side}-unreachable", "both-unreachable")


def _span(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.0f} min" if seconds >= 60 else f"{seconds:.0f} s"


def stall_alert(last: float, now: float) -> dict[str, Any]:
    return {"kind": STALL, "since": iso_s(last), "seconds": round(now - last, 1),
            "text": f"shadow-burnin STALLED: no round committed for {_span(now - last)} "
                    f"(last at {iso_s(last)})"}


def spike_alert(side: str, down: int, window: int) -> dict[str, Any]:
    return {"kind": SPIKE, "side": side, "down": down, "rounds": window,
            "rate": down / window if window else 0.0,
            "text": f"shadow-burnin: {side} unreachable in {down} of the last "
                    f"{window} rounds"}


def is_stalled(rule: LivenessRule, last: float | None, now: float) -> bool:
    return rule.stall_s > 0 and last is not None and now - last >= rule.stall_s


def spiking(rule: LivenessRule, recent: Sequence[str]) -> dict[str, int]:
    """Side → rounds down among ``recent`` (the last ``spike_window`` buckets, or fewer)
    for each side at or above ``spike_rounds``."""
    tail = list(recent)[-rule.spike_window:]
    out = {}
    for side in SIDES:
        down = sum(side_down(b, side) for b in tail)
        if down >= rule.spike_rounds:
            out[side] = down
    return out


def conditions(rule: LivenessRule, last: float | None, recent: Sequence[str],
               now: float) -> list[dict[str, Any]]:
    """The alerts that hold at ``now``: ``last`` is the time of the last committed round
    (None: none yet), ``recent`` the buckets of the last rounds, oldest first."""
    out = [stall_alert(last, now)] if last is not None and is_stalled(rule, last, now) \
        else []
    tail = list(recent)[-rule.spike_window:]
    out += [spike_alert(side, down, len(tail))
            for side, down in spiking(rule, tail).items()]
    return out


class LivenessMonitor(msgspec.Struct):
    """Episodes of the rule over a stream of committed rounds (see the module doc).

    ``start(now)`` begins the watch; ``committed(now, buckets)`` takes a committed batch
    and ``check(now)`` the passing of time; each returns the messages to send, in order:
    ``{"kind": "stall" | "unreachable-spike", ..., "text"}`` when a condition starts and
    ``{"kind": "stall-recovered" | "unreachable-recovered", ..., "text"}`` when it ends.
    """

    rule: LivenessRule
    last: float | None = None
    recent: deque[str] = msgspec.field(default_factory=deque)
    stalled: bool = False
    spikes: set[str] = msgspec.field(default_factory=set)

    def start(self, now: float, recent: Iterable[str] = ()) -> None:
        """Begin at ``now`` (the stall clock starts here), knowing the log's last rounds
        (their spike is not re-announced: a restarted run that still sees it does)."""
        self.last = now
        self.recent = deque(recent, maxlen=self.rule.spike_window)

    def committed(self, now: float, buckets: Sequence[str]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if not buckets:
            return out
        if self.stalled:
            self.stalled = False
            gap = now - (self.last if self.last is not None else now)
            out.append({"kind": "stall-recovered", "seconds": round(gap, 1),
                        "text": f"shadow-burnin: rounds flow again after "
                                f"{_span(gap)} without one"})
        self.last = now
        if self.recent.maxlen != self.rule.spike_window:
            self.recent = deque(self.recent, maxlen=self.rule.spike_window)
        for bucket in buckets:
            self.recent.append(bucket)
            out += self._spikes()
        return out

    def _spikes(self) -> list[dict[str, Any]]:
        out = []
        n = len(self.recent)
        for side in SIDES:
            down = sum(side_down(b, side) for b in self.recent)
            if side not in self.spikes and down >= self.rule.spike_rounds:
                self.spikes.add(side)
                out.append(spike_alert(side, down, n))
            elif side in self.spikes and down <= self.rule.spike_rounds // 2:
                self.spikes.discard(side)
                out.append({"kind": "unreachable-recovered", "side": side, "down": down,
                            "rounds": n,
                            "text": f"shadow-burnin: {side} answers again ({down} of the "
                                    f"last {n} rounds unreachable)"})
        return out

    def check(self, now: float) -> list[dict[str, Any]]:
        if self.stalled or self.last is None or not is_stalled(self.rule, self.last, now):
            return []
        self.stalled = True
        return [stall_alert(self.last, now)]
