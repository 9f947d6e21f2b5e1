"""One prompt of a burn-in set, and the pure helpers around it.

A prompt comes in one of two forms:

- *plain*: ``prompt`` is a string (possibly empty) sent as-is to ``/v1/completions``, or
  as a single user message to ``/v1/chat/completions``;
- *chat*: ``messages`` is a non-empty sequence of :class:`Message` (role + content), sent
  as-is to the chat endpoint, or flattened by :func:`completion_text` for completions.

``parse_prompt`` validates one decoded JSON object (one line of a prompts file) and is
the only way the loader builds prompts, so every prompt in a run obeys the same rules.
Nothing here does I/O.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import msgspec

from shadow_burnin.core.limits import MAX_TOKENS

ROLES: tuple[str, ...] = ("system", "user", "assistant")
FIELDS: tuple[str, ...] = ("id", "category", "prompt", "messages", "max_tokens", "params", "at")
# request fields a prompt's ``params`` may not hold: the run sets them (or they are the prompt)
RESERVED_PARAMS: frozenset[str] = frozenset((
    "model", "stream", "stream_options", "messages", "prompt", "max_tokens",
    "max_completion_tokens", "n_predict"))
_ROLE_LABELS: dict[str, str] = {"system": "System", "user": "User", "assistant": "Assistant"}
_DIGEST_TAG = b"shadow-burnin prompts v1\n"


class Message(msgspec.Struct, frozen=True):
    """One chat turn. ``role`` is one of :data:`ROLES`; ``content`` may be empty."""

    role: str
    content: str

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


class Prompt(msgspec.Struct, frozen=True):
    """One prompt: exactly one of ``prompt`` (plain) or ``messages`` (chat) is set."""

    id: str
    category: str
    prompt: str | None = None
    messages: tuple[Message, ...] | None = None
    max_tokens: int | None = None
    # a captured request's own parameters (stop, top_p, ...), sent to both sides as they
    # are, and its arrival time (ISO-8601) for ``run --replay``
    params: Mapping[str, Any] | None = None  # compared, not hashed (see __hash__)
    at: str | None = None

    def __hash__(self) -> int:
        # every field but ``params`` (a mapping, unhashable), as the dataclass had it
        return hash((self.id, self.category, self.prompt, self.messages, self.max_tokens,
                     self.at))

    def __post_init__(self) -> None:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("prompt: give exactly one of prompt or messages")

    @property
    def is_chat(self) -> bool:
        """True for the chat form (``messages``), False for the plain form."""
        return self.messages is not None


def chat_messages(p: Prompt) -> list[dict[str, str]]:
    """The prompt as an OpenAI ``messages`` list (fresh dicts, safe to mutate)."""
    if p.messages is not None:
        return [m.to_dict() for m in p.messages]
    return [{"role": "user", "content": p.prompt or ""}]


def _turn(m: Message) -> str:
    label = _ROLE_LABELS.get(m.role, m.role.capitalize())
    return f"{label}: {m.content}" if m.content else f"{label}:"


def completion_text(p: Prompt) -> str:
    """The prompt as one string for ``/v1/completions``.

    A plain prompt is returned unchanged. A chat prompt becomes a transcript, one
    ``Role: content`` paragraph per turn, separated by blank lines and ending with
    ``Assistant:`` so the model writes the next reply. When the last turn is already
    the assistant's (a prefill), the transcript ends with that turn instead, so the
    model continues it.
    """
    if p.messages is None:
        return p.prompt or ""
    turns = [_turn(m) for m in p.messages]
    if p.messages[-1].role != "assistant":
        turns.append("Assistant:")
    return "\n\n".join(turns)


def _short(value: object) -> str:
    """A one-line, bounded description of a bad value for error messages."""
    text = json.dumps(value, ensure_ascii=True, default=repr)
    return text if len(text) <= 40 else text[:37] + "..."


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


def _check_text(field: str, text: str) -> str:
    """Reject lone surrogates (from ``\\ud800``-style escapes): not sendable as UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"{field}: contains a lone surrogate at character {exc.start} (not valid Unicode)"
        ) from None
    return text


def _parse_id(obj: Mapping[str, Any]) -> str:
    if "id" not in obj:
        raise ValueError("id: missing")
    pid = obj["id"]
    if not isinstance(pid, str):
        raise ValueError(f"id: must be a string, got {_type_name(pid)}")
    if not pid.strip():
        raise ValueError("id: must not be empty")
    if any(not ch.isprintable() for ch in pid):
        raise ValueError(f"id: must not contain control characters: {_short(pid)}")
    return _check_text("id", pid)


def _parse_category(obj: Mapping[str, Any]) -> str:
    if "category" not in obj:
        raise ValueError("category: missing")
    cat = obj["category"]
    if not isinstance(cat, str):
        raise ValueError(f"category: must be a string, got {_type_name(cat)}")
    if not cat.strip():
        raise ValueError("category: must not be empty")
    if any(not ch.isprintable() for ch in cat):
        raise ValueError(f"category: must not contain control characters: {_short(cat)}")
    return _check_text("category", cat)


def _parse_message(index: int, item: object) -> Message:
    where = f"messages[{index}]"
    if not isinstance(item, Mapping):
        raise ValueError(f"{where}: must be an object, got {_type_name(item)}")
    extra = sorted(str(k) for k in item if k not in ("role", "content"))
    if extra:
        raise ValueError(f"{where}.{extra[0]}: unknown field (expected role and content)")
    if "role" not in item:
        raise ValueError(f"{where}.role: missing")
    role = item["role"]
    if role not in ROLES:
        raise ValueError(f"{where}.role: must be one of {', '.join(ROLES)}, got {_short(role)}")
    if "content" not in item:
        raise ValueError(f"{where}.content: missing")
    content = item["content"]
    if not isinstance(content, str):
        raise ValueError(f"{where}.content: must be a string, got {_type_name(content)}")
    return Message(role=role, content=_check_text(f"{where}.content", content))


def _parse_messages(value: object) -> tuple[Message, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise ValueError(f"messages: must be an array, got {_type_name(value)}")
    if not value:
        raise ValueError("messages: must not be empty")
    return tuple(_parse_message(i, item) for i, item in enumerate(value))


def _parse_max_tokens(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"max_tokens: must be a positive integer, got {_short(value)}")
    lo, hi = MAX_TOKENS
    if not lo <= value <= hi:
        raise ValueError(f"max_tokens: must be an integer in {lo}..{hi:_}, got {_short(value)}")
    return value


def _parse_params(value: object) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"params: must be an object, got {_type_name(value)}")
    for key in value:
        if key in RESERVED_PARAMS:
            raise ValueError(f"params.{key}: set by the run or by the prompt's own fields, "
                             "not in params")
    return dict(value)


def _parse_at(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"at: must be an ISO-8601 time string, got {_type_name(value)}")
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"at: not an ISO-8601 time: {_short(value)}") from None
    if stamp.tzinfo is None:
        raise ValueError(f"at: needs a time zone (e.g. Z): {_short(value)}")
    return value


def at_seconds(p: Prompt) -> float | None:
    """The prompt's arrival time (``at``) in epoch seconds, None without one."""
    return None if p.at is None else datetime.fromisoformat(p.at).timestamp()


def parse_prompt(obj: object) -> Prompt:
    """Validate one decoded JSON object and build a :class:`Prompt`.

    Raises ``ValueError("<field>: <problem>")`` on the first problem found. The empty
    string is a valid ``prompt`` (an edge case worth testing); ``null`` is not.
    """
    if not isinstance(obj, Mapping):
        raise ValueError(f"prompt record: must be a JSON object, got {_type_name(obj)}")
    unknown = sorted(str(k) for k in obj if k not in FIELDS)
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown field (allowed: {', '.join(FIELDS)})")
    pid = _parse_id(obj)
    category = _parse_category(obj)
    has_prompt, has_messages = "prompt" in obj, "messages" in obj
    if has_prompt and has_messages:
        raise ValueError("prompt: give exactly one of prompt or messages, not both")
    if not has_prompt and not has_messages:
        raise ValueError("prompt: missing (give prompt or messages)")
    text: str | None = None
    messages: tuple[Message, ...] | None = None
    if has_prompt:
        text = obj["prompt"]
        if not isinstance(text, str):
            raise ValueError(f"prompt: must be a string, got {_type_name(text)}")
        _check_text("prompt", text)
    else:
        messages = _parse_messages(obj["messages"])
    max_tokens = _parse_max_tokens(obj["max_tokens"]) if "max_tokens" in obj else None
    params = _parse_params(obj["params"]) if "params" in obj else None
    at = _parse_at(obj["at"]) if "at" in obj else None
    return Prompt(pid, category, prompt=text, messages=messages, max_tokens=max_tokens,
                  params=params, at=at)


def prompt_to_dict(p: Prompt) -> dict[str, Any]:
    """The JSON object for ``p``, as in a prompts file; ``parse_prompt`` inverts it."""
    out: dict[str, Any] = {"id": p.id, "category": p.category}
    if p.messages is not None:
        out["messages"] = [m.to_dict() for m in p.messages]
    else:
        out["prompt"] = p.prompt if p.prompt is not None else ""
    if p.max_tokens is not None:
        out["max_tokens"] = p.max_tokens
    if p.params is not None:
        out["params"] = dict(p.params)
    if p.at is not None:
        out["at"] = p.at
    return out


def prompts_digest(prompts: Sequence[Prompt]) -> str:
    """A stable SHA-256 hex digest of the ordered prompt set.

    Covers every field of every prompt, in order: reordering, editing a single
    character, or changing a ``max_tokens`` changes the digest; rebuilding equal
    prompts does not. Each prompt is one canonical JSON line, so field and prompt
    boundaries cannot be confused.
    """
    h = hashlib.sha256(_DIGEST_TAG)
    for p in prompts:
        line = json.dumps(
            prompt_to_dict(p), ensure_ascii=False, sort_keys=True, separators=(",", ":")
        )
        h.update(line.encode("utf-8", "surrogatepass"))
        h.update(b"\n")
    return h.hexdigest()
