"""The records of the JSONL log: one round per line (schema 1).

A round is one prompt sent to both servers. Each side's outcome is a ``SideReply``;
the round adds the comparison of the two texts. ``to_json`` gives the exact
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
