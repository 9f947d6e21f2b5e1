"""Cutover and rollback as events (pure): the record shapes, and the fold that says which
side the route points at after a log's events.

``cutover``: the route was flipped to v2 (``verified`` false when the check through the
proxy failed and the flip was undone at once, which a ``rollback`` event follows);
``rollback``: the route went back to v1 (by hand or ``automatic``); ``cutover-check``:
one check of a watched promotion (its figures and the decision).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

CUTOVER_EVENT = "cutover"
ROLLBACK_EVENT = "rollback"
CHECK_EVENT = "cutover-check"


class FlipStatus(msgspec.Struct, frozen=True):
    """Where the route points after the events: ``v2`` after a verified cutover not
    rolled back, else ``v1``; ``last`` is the event that decided it (None: never flipped)."""

    on: str
    last: dict[str, Any] | None
    cutovers: int
    rollbacks: int

    def to_json(self) -> dict[str, Any]:
        return {"on": self.on, "cutovers": self.cutovers, "rollbacks": self.rollbacks,
                "last": self.last}


def flip_status(events: Iterable[Mapping[str, Any]]) -> FlipStatus:
    on, last, cut, back = "v1", None, 0, 0
    for e in events:
        if e.get("kind") != "event":
            continue
        name = e.get("event")
        if name == CUTOVER_EVENT and e.get("verified") is True:
            on, last, cut = "v2", dict(e), cut + 1
        elif name == ROLLBACK_EVENT:
            on, last, back = "v1", dict(e), back + 1
    return FlipStatus(on, last, cut, back)


def last_cutover(events: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The last verified ``cutover`` event (what a rollback may restore)."""
    found = None
    for e in events:
        if e.get("kind") == "event" and e.get("event") == CUTOVER_EVENT and \
                e.get("verified") is True:
            found = dict(e)
    return found


def flip_line(status: FlipStatus) -> str | None:
    """One line for ``gates``/``bench``: when the cutover (or the rollback) happened."""
    e = status.last
    if e is None:
        return None
    route = e.get("route", "/v1/*")
    if e.get("event") == CUTOVER_EVENT:
        forced = f", forced: {e.get('reason')}" if e.get("forced") else ""
        return f"cut over at {e.get('ts')}: {route} → v2 ({e.get('to')}){forced}"
    how = "automatic rollback" if e.get("automatic") else "rolled back"
    return f"{how} at {e.get('ts')}: {route} → v1 ({e.get('to')}): {e.get('reason')}"


class TellApart(msgspec.Struct, frozen=True):
    """A prompt both sides answer differently and reproducibly, with each side's text."""

    prompt_id: str
    v1_text: str
    v2_text: str
    rounds: int


def tell_apart(records: Iterable[Mapping[str, Any]], min_rounds: int = 2
               ) -> TellApart | None:
    """From round records: the prompt whose parity rounds all gave v1 one same text and
    v2 another same text (at least ``min_rounds`` rounds); the most-seen one wins."""
    seen: dict[str, list[Any]] = {}
    bad: set[str] = set()
    for r in records:
        if r.get("kind", "round") != "round" or r.get("bucket") not in (
                "exact", "prefix-only", "no-match"):
            continue
        pid = r.get("prompt_id")
        v1, v2 = (r.get(s) or {} for s in ("v1", "v2"))
        t1, t2 = v1.get("text"), v2.get("text")
        if not isinstance(pid, str) or pid in bad:
            continue
        if not isinstance(t1, str) or not isinstance(t2, str) or t1 == t2:
            bad.add(pid)
            seen.pop(pid, None)
            continue
        entry = seen.get(pid)
        if entry is None:
            seen[pid] = [t1, t2, 1]
        elif entry[0] == t1 and entry[1] == t2:
            entry[2] += 1
        else:
            bad.add(pid)
            seen.pop(pid)
    best = max(((n, pid, a, b) for pid, (a, b, n) in seen.items() if n >= min_rounds),
               default=None)
    if best is None:
        return None
    n, pid, a, b = best
    return TellApart(pid, a, b, n)
