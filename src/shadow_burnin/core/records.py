"""The records of the JSONL log: one round per line (schema 1).

A round is one prompt sent to both servers. Each side's outcome is a ``SideReply``;
the round adds the comparison of the two texts. ``to_json``/``from_json`` give the exact
on-disk shape, so every reader and writer agrees on the field names.

The log holds exactly one line per round. A round that also sent its prompt twice to v1
(an A/A pair) carries the pair under ``"aa"``. Logs written by earlier versions may also
hold other lines: events (``"kind": "event"``, now in ``<log>.events.jsonl``) and A/A
records (``"kind": "aa"``, one after their round). :func:`record_kind` is the one place
that tells the kinds apart; :func:`aa_records` gives the A/A records of either layout in
one shape.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator, Mapping
from typing import Any

import msgspec

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


class SideReply(msgspec.Struct):
    """One server's answer to one request (or why there was none)."""

    text: str | None
    latency_ms: float | None = None
    ttft_ms: float | None = None
    status: int | None = None
    finish_reason: str | None = None
    completion_tokens: int | None = None
    error: str | None = None
    truncated: bool = False
    extra: dict[str, Any] = msgspec.field(default_factory=dict)

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
            "completion_tokens", "error", "truncated", TEXT_ESCAPE,
        }
        text = obj.get("text")
        if isinstance(text, str) and obj.get(TEXT_ESCAPE) == SURROGATES:
            text = unescape_surrogates(text)
        return cls(
            text=text,
            latency_ms=obj.get("latency_ms"),
            ttft_ms=obj.get("ttft_ms"),
            status=obj.get("status"),
            finish_reason=obj.get("finish_reason"),
            completion_tokens=obj.get("completion_tokens"),
            error=obj.get("error"),
            truncated=bool(obj.get("truncated", False)),
            extra={k: v for k, v in obj.items() if k not in known},
        )


class Round(msgspec.Struct):
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
    extra: dict[str, Any] = msgspec.field(default_factory=dict)

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


class RecordKind(enum.Enum):
    ROUND = "round"
    EVENT = "event"
    AA = "aa"  # an A/A line of the old layout
    OTHER = "other"  # a kind this version does not know (kept, never counted)


_KINDS = {"round": RecordKind.ROUND, "event": RecordKind.EVENT, "aa": RecordKind.AA}


def record_kind(record: Mapping[str, Any]) -> RecordKind:
    """What a line of a log is: a round (no ``kind``, or ``"round"``), an inline event or
    an A/A line of the old layout, or something else."""
    kind = record.get("kind")
    if kind is None:
        return RecordKind.ROUND
    return _KINDS.get(kind, RecordKind.OTHER) if isinstance(kind, str) else RecordKind.OTHER


def is_round(record: Mapping[str, Any]) -> bool:
    return record_kind(record) is RecordKind.ROUND


# the round fields an A/A record repeats from its round
AA_ROUND_FIELDS = ("round", "prompt_id", "category", "setup")


def aa_record(round_record: Mapping[str, Any]) -> dict[str, Any] | None:
    """The A/A pair carried by a round (key ``"aa"``) as a stand-alone ``"kind": "aa"``
    record (the old layout's shape); None if the round has none."""
    aa = round_record.get("aa")
    if not isinstance(aa, dict):
        return None
    out: dict[str, Any] = {"kind": "aa", "schema": round_record.get("schema", SCHEMA)}
    for key in AA_ROUND_FIELDS:
        if key in round_record:
            out[key] = round_record[key]
    out.update(aa)
    return out


def embed_aa(round_record: dict[str, Any], aa_line: Mapping[str, Any]) -> None:
    """Put an old-layout A/A line inside its round (``migrate``)."""
    round_record["aa"] = {k: v for k, v in aa_line.items()
                          if k not in ("kind", "schema", *AA_ROUND_FIELDS)}


def aa_records(records: Iterator[Mapping[str, Any]] | list[dict[str, Any]]
               ) -> Iterator[dict[str, Any]]:
    """The A/A records among log records of either layout, in order."""
    for record in records:
        kind = record_kind(record)
        if kind is RecordKind.AA:
            yield dict(record)
        elif kind is RecordKind.ROUND:
            aa = aa_record(record)
            if aa is not None:
                yield aa


# -- lone surrogates ------------------------------------------------------------------
# A reply may hold a lone surrogate (``"\\ud800"`` is valid JSON). UTF-8 cannot carry
# it, so the log stores such a side's text escaped, losslessly: every backslash doubled
# and each lone surrogate written as ``\\udXXX``, with ``"text_escape": "surrogates"`` on
# the side. ``SideReply.from_json`` undoes it. Any other string holding one (e.g. a
# logprob token) is stored with U+FFFD in its place.
TEXT_ESCAPE = "text_escape"
SURROGATES = "surrogates"
_SURROGATE = re.compile("[\ud800-\udfff]")
_ESCAPED = re.compile(r"\\(\\|u(d[89a-f][0-9a-f]{2}))")


def has_surrogates(text: str) -> bool:
    return not text.isascii() and _SURROGATE.search(text) is not None


def escape_surrogates(text: str) -> str:
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text.replace("\\", "\\\\"))


def unescape_surrogates(text: str) -> str:
    return _ESCAPED.sub(lambda m: "\\" if m.group(1) == "\\" else chr(int(m.group(2), 16)),
                        text)


def loggable(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` as it can be written to the log: side texts with lone surrogates
    escaped (flagged), any other such string with U+FFFD in their place."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if key in SIDES and isinstance(value, dict):
            fixed: dict[str, Any] = {}
            for k, v in value.items():
                if k == "text" and isinstance(v, str) and has_surrogates(v):
                    fixed[k] = escape_surrogates(v)
                    fixed[TEXT_ESCAPE] = SURROGATES
                else:
                    fixed[k] = _scrub(v)
            out[key] = fixed
        else:
            out[key] = _scrub(value)
    return out


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value) if has_surrogates(value) else value
    if isinstance(value, dict):
        return {_scrub(k): _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value
