"""The run state: what a restart needs, folded from the log's rounds and its events (pure).

The state file is a cache: everything in it is derived from the log (rounds) and from
``<log>.events.jsonl`` (events; older logs carried them inline). ``log_head`` identifies
the log a state belongs to (a digest of its first line), so a state file of another log
is refused instead of being silently replaced.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec

from shadow_burnin.core.records import BUCKETS, RecordKind, record_kind

STATE_SCHEMA = 1
_KNOWN = ("schema", "setup", "last_round", "counts", "cursor", "seed", "started_at",
          "last_ts", "log_size", "events_size", "log_head")


def head_digest(first_line: bytes) -> str:
    """The identity of a log: a digest of its first line (without the newline)."""
    return hashlib.sha256(first_line.rstrip(b"\n")).hexdigest()[:32]


class State(msgspec.Struct):
    """What a restart needs, derived entirely from the log and its events."""

    setup: str | None = None
    last_round: int = 0
    counts: dict[str, int] = msgspec.field(default_factory=lambda: dict.fromkeys(BUCKETS, 0))
    cursor: int = 0
    seed: int | None = None
    started_at: str | None = None
    last_ts: str | None = None
    log_size: int = 0
    events_size: int = 0  # bytes of <log>.events.jsonl folded in
    log_head: str | None = None  # head_digest of the log's first line
    extra: dict[str, Any] = msgspec.field(default_factory=dict)

    def apply(self, record: dict[str, Any]) -> None:
        """Fold one log record (a round; an event written inline by an older version;
        an old separate A/A line, which changes nothing)."""
        kind = record_kind(record)
        if kind is RecordKind.EVENT:
            self.apply_event(record)
            return
        if kind is not RecordKind.ROUND:
            return
        self.last_round = max(self.last_round, int(record["round"]))
        bucket = record.get("bucket")
        if bucket in self.counts:
            self.counts[bucket] += 1
        if self.started_at is None:
            self.started_at = record.get("ts")
        self.last_ts = record.get("ts", self.last_ts)
        if record.get("source") != "legacy":
            if record.get("cursor") is not None:
                self.cursor = int(record["cursor"]) + 1
            if record.get("seed") is not None:
                self.seed = int(record["seed"])
            if record.get("setup") is not None:
                self.setup = str(record["setup"])

    def apply_event(self, event: dict[str, Any]) -> None:
        """Mirror the active no-match halt in ``extra["halt"]`` (the events stay the truth)."""
        name = event.get("event")
        if name == "halt":
            self.extra["halt"] = {"active": True, "event": event}
        elif name == "ack-halt":
            self.extra["halt"] = {"active": False,
                                  "event": (self.extra.get("halt") or {}).get("event"),
                                  "ack": event}

    def copy(self) -> State:
        """An independent copy (``apply`` on it leaves this one alone)."""
        return State(self.setup, self.last_round, dict(self.counts), self.cursor, self.seed,
                     self.started_at, self.last_ts, self.log_size, self.events_size,
                     self.log_head, dict(self.extra))

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": STATE_SCHEMA,
            "setup": self.setup,
            "last_round": self.last_round,
            "counts": self.counts,
            "cursor": self.cursor,
            "seed": self.seed,
            "started_at": self.started_at,
            "last_ts": self.last_ts,
            "log_size": self.log_size,
            "events_size": self.events_size,
            "log_head": self.log_head,
            **self.extra,
        }

    @classmethod
    def from_json(cls, obj: Any) -> State:
        """The state of a state file's JSON; ValueError (with the reason) if it is not one."""
        if not isinstance(obj, dict) or obj.get("schema") != STATE_SCHEMA:
            raise ValueError("not a shadow-burnin state file (no schema 1)")
        try:
            counts = {b: int(obj["counts"].get(b, 0)) for b in BUCKETS}
            head = obj.get("log_head")
            return cls(
                setup=obj.get("setup"),
                last_round=int(obj["last_round"]),
                counts=counts,
                cursor=int(obj.get("cursor", 0)),
                seed=None if obj.get("seed") is None else int(obj["seed"]),
                started_at=obj.get("started_at"),
                last_ts=obj.get("last_ts"),
                log_size=int(obj.get("log_size", 0)),
                events_size=int(obj.get("events_size", 0)),
                log_head=head if isinstance(head, str) else None,
                extra={k: v for k, v in obj.items() if k not in _KNOWN},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"corrupt state file ({type(exc).__name__}: {exc})") from None
