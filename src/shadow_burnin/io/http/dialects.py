"""The request/reply dialects of the client, one small class each, behind one interface.

A dialect knows its path, how to build a request body, how to read a whole (non-stream)
reply and how to fold one stream event. Transport, caps, timing and error mapping stay
in ``io.http.client``.

- ``chat``: OpenAI ``/v1/chat/completions`` (messages; ``delta.content`` chunks).
- ``completions``: OpenAI ``/v1/completions`` (prompt; ``text`` chunks).
- ``native``: llama.cpp's ``/completion`` (``n_predict``, ``n_probs``; ``content``
  events, the last one with ``"stop": true`` and no ``[DONE]``).
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Literal

import msgspec
import orjson

from shadow_burnin.core.prompt import Prompt, chat_messages, completion_text
from shadow_burnin.core.records import SideReply
from shadow_burnin.io.http.reply_error import ReplyError

Api = Literal["chat", "completions", "native"]
APIS: tuple[Api, ...] = ("chat", "completions", "native")


class StreamAcc(msgspec.Struct):
    """What a stream has brought so far."""

    want_logprobs: bool = False
    parts: list[str] = msgspec.field(default_factory=list)
    logprobs: list[Any] = msgspec.field(default_factory=list)
    null_seen: bool = False
    done: bool = False  # the stream's own end marker arrived
    finished: bool = False  # a finish_reason arrived (the end marker may still be missing)


def decode_json(raw: bytes) -> dict[str, Any]:
    """A reply body or stream event as a JSON object.

    orjson refuses a lone surrogate escape (``"\\ud800"``), which is valid JSON: such a
    document is decoded by the standard library instead and the surrogate kept (see the
    client's module doc)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ReplyError("invalid-utf8", "reply is not valid UTF-8") from None
        if "surrogate" not in str(exc):
            raise ReplyError("invalid-json", str(exc)[:120]) from None
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            raise ReplyError("invalid-json", str(exc)[:120]) from None
    if not isinstance(data, dict):
        raise ReplyError("bad-shape", "reply is not a JSON object")
    return data


def first_choice(data: dict[str, Any]) -> dict[str, Any]:
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ReplyError("bad-shape", "no choices in reply")
    return choices[0]


def check_error_event(chunk: dict[str, Any], payload: str) -> None:
    """A stream event that carries an ``error`` instead of its ``payload`` key."""
    if "error" in chunk and payload not in chunk:
        raise ReplyError("bad-shape", f"error event: {' '.join(str(chunk['error']).split())[:120]}")


def usage_tokens(data: dict[str, Any]) -> int | None:
    usage = data.get("usage")
    if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
        return int(usage["completion_tokens"])
    return None


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


class Dialect:
    """The interface: ``path``, ``body``, ``whole``, ``event``."""

    name: ClassVar[Api]
    path: ClassVar[str]

    def body(self, prompt: Prompt, model: str | None, *, max_tokens: int, stream: bool,
             logprobs: int, extra: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if model:
            body["model"] = model
        body.update(self.content(prompt))
        body["temperature"] = 0
        body[self.max_tokens_key] = max_tokens
        body["stream"] = stream
        if logprobs:
            body.update(self.logprob_fields(logprobs))
        body.update(extra)
        return body

    max_tokens_key: ClassVar[str] = "max_tokens"

    def content(self, prompt: Prompt) -> dict[str, Any]:
        return {"prompt": completion_text(prompt)}

    def logprob_fields(self, k: int) -> dict[str, Any]:
        return {"logprobs": k}

    def whole(self, data: dict[str, Any], reply: SideReply) -> tuple[str, Any]:
        """Fill ``reply`` from a whole reply; returns (text, raw logprobs)."""
        raise NotImplementedError

    def event(self, payload: bytes, acc: StreamAcc, reply: SideReply) -> None:
        """Fold one stream event's payload."""
        raise NotImplementedError


class _OpenAI(Dialect):
    """What chat and completions share: ``choices``, ``[DONE]``, ``usage``."""

    def piece(self, choice: dict[str, Any]) -> str | None:
        raise NotImplementedError

    def whole_text(self, choice: dict[str, Any]) -> object:
        raise NotImplementedError

    def whole(self, data: dict[str, Any], reply: SideReply) -> tuple[str, Any]:
        choice = first_choice(data)
        text = self.whole_text(choice)
        if not isinstance(text, str):
            raise ReplyError("bad-shape", "reply content is null or not a string")
        reply.finish_reason = _opt_str(choice.get("finish_reason"))
        reply.completion_tokens = usage_tokens(data)
        return text, choice.get("logprobs")

    def event(self, payload: bytes, acc: StreamAcc, reply: SideReply) -> None:
        if payload == b"[DONE]":
            acc.done = True
            return
        chunk = decode_json(payload)
        check_error_event(chunk, "choices")
        tokens = usage_tokens(chunk) if "usage" in chunk else None
        if tokens is not None:
            reply.completion_tokens = tokens
        choices = chunk.get("choices")
        if not choices:
            if choices is None and tokens is None:
                raise ReplyError("bad-shape", "stream chunk without choices")
            return
        choice = first_choice(chunk)
        piece = self.piece(choice)
        if piece:
            acc.parts.append(piece)
        elif piece is None and not acc.null_seen:
            acc.null_seen = self.explicit_null(choice)
        if acc.want_logprobs and choice.get("logprobs") is not None:
            acc.logprobs.append(choice["logprobs"])
        reason = choice.get("finish_reason")
        if reason:
            reply.finish_reason = str(reason)
            acc.finished = True

    def explicit_null(self, choice: dict[str, Any]) -> bool:
        return False


class Chat(_OpenAI):
    name = "chat"
    path = "/v1/chat/completions"

    def content(self, prompt: Prompt) -> dict[str, Any]:
        return {"messages": chat_messages(prompt)}

    def logprob_fields(self, k: int) -> dict[str, Any]:
        return {"logprobs": True, "top_logprobs": k}

    def whole_text(self, choice: dict[str, Any]) -> object:
        message = choice.get("message")
        return message.get("content") if isinstance(message, dict) else None

    def piece(self, choice: dict[str, Any]) -> str | None:
        delta = choice.get("delta")
        if delta is None:
            delta = choice.get("message")
        if not isinstance(delta, dict):
            raise ReplyError("bad-shape", "stream chunk without delta")
        piece = delta.get("content")
        if piece is not None and not isinstance(piece, str):
            raise ReplyError("bad-shape", "content is not a string")
        return piece

    def explicit_null(self, choice: dict[str, Any]) -> bool:
        """A delta that says ``content: null`` while carrying nothing else."""
        delta = choice.get("delta")
        return (isinstance(delta, dict) and "content" in delta and delta["content"] is None
                and not (delta.keys() - {"content"}))


class Completions(_OpenAI):
    name = "completions"
    path = "/v1/completions"

    def whole_text(self, choice: dict[str, Any]) -> object:
        return choice.get("text")

    def piece(self, choice: dict[str, Any]) -> str | None:
        piece = choice.get("text")
        if piece is None and not choice.get("finish_reason"):
            raise ReplyError("bad-shape", "completion chunk text is null")
        if piece is not None and not isinstance(piece, str):
            raise ReplyError("bad-shape", "content is not a string")
        return piece


# llama.cpp's stop_type → the OpenAI finish_reason it stands for
_NATIVE_FINISH = {"limit": "length", "eos": "stop", "word": "stop"}


class Native(Dialect):
    name = "native"
    path = "/completion"
    max_tokens_key = "n_predict"

    def logprob_fields(self, k: int) -> dict[str, Any]:
        return {"n_probs": k}

    def whole(self, data: dict[str, Any], reply: SideReply) -> tuple[str, Any]:
        text = data.get("content")
        if not isinstance(text, str):
            raise ReplyError("bad-shape", "reply content is null or not a string")
        self.end(data, reply)
        return text, data.get("completion_probabilities")

    def event(self, payload: bytes, acc: StreamAcc, reply: SideReply) -> None:
        chunk = decode_json(payload)
        check_error_event(chunk, "content")
        piece = chunk.get("content")
        if piece is not None and not isinstance(piece, str):
            raise ReplyError("bad-shape", "content is not a string")
        if piece is None and chunk.get("stop") is not True:
            raise ReplyError("bad-shape", "stream event without content")
        if piece:
            acc.parts.append(piece)
        if acc.want_logprobs and chunk.get("completion_probabilities"):
            acc.logprobs.append(chunk)
        if chunk.get("stop") is True:
            self.end(chunk, reply)
            acc.done = True

    @staticmethod
    def end(data: dict[str, Any], reply: SideReply) -> None:
        """finish_reason and completion_tokens from a native reply's last object."""
        kind = data.get("stop_type")
        reply.finish_reason = _NATIVE_FINISH.get(kind, kind) if isinstance(kind, str) else None
        tokens = data.get("tokens_predicted")
        if isinstance(tokens, int) and not isinstance(tokens, bool):
            reply.completion_tokens = tokens


_DIALECTS: dict[str, Dialect] = {d.name: d for d in (Chat(), Completions(), Native())}


def dialect_for(api: str) -> Dialect:
    try:
        return _DIALECTS[api]
    except KeyError:
        raise ValueError(f"unknown api {api!r} (one of {', '.join(APIS)})") from None
