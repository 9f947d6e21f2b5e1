"""The mirror's pure rules: which real requests can be compared byte for byte, what a
forced-greedy copy is, what the log keeps of a request and its replies, and what a
capture line holds. No I/O, no clock.

Comparability (``not_comparable_reason``): a request is byte-comparable when both servers
must give one deterministic answer to it:

- ``n``/``best_of`` above 1 → ``n>1`` (several sampled choices);
- ``tools``/``functions`` → ``tools`` (the reply may be a tool call, not text);
- a batch of prompts (``prompt`` a list of several strings) → ``batch-prompt``;
- sampling: greedy is ``temperature == 0`` or ``top_k == 1``. Otherwise (temperature
  above 0, or absent: OpenAI's default is 1, llama.cpp's 0.8) → ``temperature>0``,
  unless ``trust_seed`` is set and the request has a ``seed`` (both servers are then
  trusted to honour it: an operator's claim, checked by nobody here).

``--force-greedy-shadow`` (``greedy_copy``) fixes the sampling reasons only: the shadow
*and a second, shadow-only copy to v1* get the body with ``temperature: 0`` and without
``n``/``best_of``; those two are compared, the client's own request and reply are left
alone. ``tools`` and ``batch-prompt`` stay not comparable.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from shadow_burnin.core.prompt import RESERVED_PARAMS, Prompt, at_seconds, parse_prompt

SAMPLING_REASONS = frozenset(("temperature>0", "n>1"))
CONTEXT_CHARS = 40


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def not_comparable_reason(body: Mapping[str, Any], api: str, *,
                          trust_seed: bool = False) -> str | None:
    """Why ``body`` cannot be compared byte for byte (None: it can)."""
    for key in ("n", "best_of"):
        count = _number(body.get(key))
        if count is not None and count > 1:
            return "n>1"
    if body.get("tools") or body.get("functions"):
        return "tools"
    prompt = body.get("prompt")
    if api != "chat" and isinstance(prompt, list) and prompt and \
            all(isinstance(p, str) for p in prompt) and len(prompt) > 1:
        return "batch-prompt"
    temperature = _number(body.get("temperature"))
    top_k = _number(body.get("top_k"))
    greedy = temperature == 0.0 or top_k == 1.0
    if not greedy and not (trust_seed and body.get("seed") is not None):
        return "temperature>0"
    return None


def greedy_copy(body: Mapping[str, Any]) -> dict[str, Any]:
    """The forced-greedy shadow body: temperature 0, one choice, the rest unchanged."""
    out = {k: v for k, v in body.items() if k not in ("n", "best_of")}
    out["temperature"] = 0
    return out


def prompt_text(body: Mapping[str, Any], api: str) -> str:
    """The request's prompt as one string, for its hash and length: a completion prompt
    as is, chat messages as their canonical JSON."""
    if api == "chat":
        return orjson.dumps(body.get("messages"), option=orjson.OPT_SORT_KEYS).decode()
    prompt = body.get("prompt")
    return prompt if isinstance(prompt, str) else orjson.dumps(
        prompt, option=orjson.OPT_SORT_KEYS).decode()


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def text_summary(text: str | None) -> dict[str, Any]:
    """What the log keeps of a text by default: its SHA-256 and length (code points)."""
    if text is None:
        return {"text_sha256": None, "text_chars": None}
    return {"text_sha256": digest(text), "text_chars": len(text)}


def divergence_context(v1: str, v2: str, shared_chars: int,
                       width: int = CONTEXT_CHARS) -> dict[str, Any]:
    """± ``width`` characters of both texts around the first divergence (``at``: the
    character index where both excerpts start)."""
    start = max(0, shared_chars - width)
    end = shared_chars + width
    return {"at": start, "v1": v1[start:end], "v2": v2[start:end]}


def capture_line(body: Mapping[str, Any], api: str, at: str, pid: str
                 ) -> dict[str, Any] | None:
    """A request as a prompts-file line (``run --prompts``/``--replay`` read it): its
    prompt or messages, its max tokens, every other parameter in ``params`` (but the
    model and the stream settings: the run picks those), and its arrival time. None when
    it cannot be one (content parts, a role the prompts format has no word for, a token
    list as prompt): such requests are not captured."""
    out: dict[str, Any] = {"id": pid, "category": f"mirror-{api}"}
    if api == "chat":
        out["messages"] = body.get("messages")
    else:
        out["prompt"] = body.get("prompt")
    limit = body.get("max_tokens", body.get("max_completion_tokens", body.get("n_predict")))
    if limit is not None:
        out["max_tokens"] = limit
    params = {k: v for k, v in body.items() if k not in RESERVED_PARAMS}
    if params:
        out["params"] = params
    out["at"] = at
    try:
        parse_prompt(out)
    except ValueError:
        return None
    return out


def replay_offsets(prompts: Sequence[Prompt], speed: float, interval: float
                   ) -> tuple[float, ...]:
    """When to launch each prompt of a replay, in seconds from the first: the captured
    inter-arrival times (``at``) divided by ``speed``. A file without an ``at`` on every
    line is played at the run's ``interval`` instead. Never earlier than the line before
    (a file out of order is played in file order)."""
    stamps = [at_seconds(p) for p in prompts]
    if not stamps:
        return ()
    if any(t is None for t in stamps):
        return tuple(i * interval for i in range(len(prompts)))
    first = stamps[0]
    out: list[float] = []
    last = 0.0
    for t in stamps:
        assert t is not None and first is not None
        last = max(last, (t - first) / speed)
        out.append(last)
    return tuple(out)
