"""The records of the JSONL log: one round per line (schema 1).

A round is one prompt sent to both servers. Each side's outcome is a ``SideReply``;
the round adds the comparison of the two texts. ``to_json``/``from_json`` give the exact
on-disk shape, so every reader and writer agrees on the field names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

SCHEMA = 1

BUCKETS: tuple[str, ...] = (
    "exact",
    "prefix-only",
    "no-match",
    "v1-unreachable",
    "v2-unreachable",
    "both-unreachable",
    "not-comparable",  # both replied, but the request was not greedy (mirror)
    "client-cancelled",  # the mirror's client left mid-reply: not compared
)
PARITY_BUCKETS: tuple[str, ...] = ("exact", "prefix-only", "no-match")
SIDES: tuple[str, str] = ("v1", "v2")


@dataclass(slots=True)
class SideReply:
    """One server's answer to one request (or why there was none)."""

    text: str | None
    latency_ms: float | None = None
    ttft_ms: float | None = None
    status: int | None = None
    finish_reason: str | None = None
    completion_tokens: int | None = None
    error: str | None = None
    truncated: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def replied(self) -> bool:
        """True when this side gave a usable reply (counts toward parity)."""
        return self.error is None and self.text is not None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "text": self.text,
            "latency_ms": self.latency_ms,
            "ttft_ms": self.ttft_ms,
            "status": self.status,
            "finish_reason": self.finish_reason,
            "completion_tokens": self.completion_tokens,
            "error": self.error,
        }
        if self.truncated:
            out["truncated"] = True
        out.update(self.extra)
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> SideReply:
        known = {
            "text", "latency_ms", "ttft_ms", "status", "finish_reason",
            "completion_tokens", "error", "truncated",
        }
        return cls(
            text=obj.get("text"),
            latency_ms=obj.get("latency_ms"),
            ttft_ms=obj.get("ttft_ms"),
            status=obj.get("status"),
            finish_reason=obj.get("finish_reason"),
            completion_tokens=obj.get("completion_tokens"),
            error=obj.get("error"),
            truncated=bool(obj.get("truncated", False)),
            extra={k: v for k, v in obj.items() if k not in known},
        )


@dataclass(slots=True)
class Round:
    """One logged round. ``round`` numbers count from 1 and never repeat in a log."""

    round: int
    ts: str
    prompt_id: str
    category: str
    bucket: str
    divergence_byte: int | None
    prefix_match_chars: int | None
    v1: SideReply
    v2: SideReply
    first: str | None = None
    setup: str | None = None
    seed: int | None = None
    cursor: int | None = None
    source: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema": SCHEMA,
            "round": self.round,
            "ts": self.ts,
            "prompt_id": self.prompt_id,
            "category": self.category,
            "bucket": self.bucket,
            "divergence_byte": self.divergence_byte,
            "prefix_match_chars": self.prefix_match_chars,
            "v1": self.v1.to_json(),
            "v2": self.v2.to_json(),
        }
        for key in ("first", "setup", "seed", "cursor", "source"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        out.update(self.extra)
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Round:
        known = {
            "schema", "round", "ts", "prompt_id", "category", "bucket", "divergence_byte",
            "prefix_match_chars", "v1", "v2", "first", "setup", "seed", "cursor", "source",
        }
        return cls(
            round=obj["round"],
            ts=obj["ts"],
            prompt_id=obj["prompt_id"],
            category=obj["category"],
            bucket=obj["bucket"],
            divergence_byte=obj.get("divergence_byte"),
            prefix_match_chars=obj.get("prefix_match_chars"),
            v1=SideReply.from_json(obj["v1"]),
            v2=SideReply.from_json(obj["v2"]),
            first=obj.get("first"),
            setup=obj.get("setup"),
            seed=obj.get("seed"),
            cursor=obj.get("cursor"),
            source=obj.get("source"),
            extra={k: v for k, v in obj.items() if k not in known},
        )
