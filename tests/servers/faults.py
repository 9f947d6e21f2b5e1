"""Wire layer of the scripted server: OpenAI shapes, SSE writing, and every fault.

``respond(exchange, fault)`` writes one HTTP response for one request: the normal reply
when ``fault`` is None, else the named misbehaviour. This module never imports
``tests.servers.scripted`` (which may run as ``__main__``).

Faults that only make sense for a stream (``sse-cut``, ``sse-no-done``) give the normal
reply to a non-stream request. ``refuse`` is handled by the server (it stops listening).
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
from aiohttp import web

CREATED = 1_700_000_000
MB = 1024 * 1024
FAULTS: tuple[str, ...] = (
    "refuse", "reset-after-headers", "reset-mid-body", "sse-cut", "sse-no-done",
    "http-500", "http-502", "http-503", "http-429", "invalid-json", "no-choices",
    "null-content", "invalid-utf8", "huge", "drip", "hang", "redirect",
)
DONE = b"data: [DONE]\n\n"
BAD_JSON_BODY = b'{"id": "scripted", "choices": [ this is not json'
BAD_JSON_EVENT = b'data: {"choices": [ this is not json\n\n'
BAD_UTF8 = b"\xff\xfe"
_MARK = "@@SCRIPTED-MARK@@"
_MARK_BYTES = _MARK.encode()
_BLOCK = 64 * 1024
_POLL_S = 0.05


MISSING: Any = object()  # "no override" (None is an override: null content)


@dataclass(slots=True)
class Reply:
    """Everything needed to render one normal reply in the OpenAI shape."""

    api: str  # "chat" | "completions" | "native" | "models" (models: text is the model id)
    rid: str
    model: str
    text: str
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_mode: str = "auto"  # auto | chunk | final | none
    include_usage: bool = False
    chunk_chars: int = 4

    def usage(self) -> dict[str, int]:
        p, c = self.prompt_tokens, self.completion_tokens
        return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}

    def body(self, content: Any = MISSING, choices: bool = True) -> dict[str, Any]:
        """The non-stream JSON object (``content`` overrides the text, e.g. None)."""
        text = self.text if content is MISSING else content
        if self.api == "models":
            model = {"id": text, "object": "model", "created": CREATED, "owned_by": "scripted"}
            return {"object": "list", "data": [model]} if choices else {"object": "list"}
        if self.api == "native":  # llama.cpp's /completion
            return self.native_end(content=text)
        if self.api == "chat":
            choice: dict[str, Any] = {"index": 0, "finish_reason": self.finish_reason,
                                      "message": {"role": "assistant", "content": text}}
            kind = "chat.completion"
        else:
            choice = {"index": 0, "text": text, "logprobs": None,
                      "finish_reason": self.finish_reason}
            kind = "text_completion"
        out = {"id": self.rid, "object": kind, "created": CREATED, "model": self.model}
        if choices:
            out["choices"] = [choice]
        if self.usage_mode != "none":
            out["usage"] = self.usage()
        return out

    def pieces(self) -> list[str]:
        """The text cut into chunks of ``chunk_chars`` code points."""
        size = max(1, self.chunk_chars)
        return [self.text[i:i + size] for i in range(0, len(self.text), size)]

    def chunk(self, piece: Any = MISSING, finish: str | None = None,
              *, role: bool = False) -> dict[str, Any]:
        """One stream chunk; ``piece`` MISSING means an empty delta (role/finish chunks)."""
        if self.api == "native":
            if finish is not None:
                return self.native_end(content="")
            return {"index": 0, "content": "" if piece is MISSING else piece, "stop": False}
        if self.api == "chat":
            delta = {"role": "assistant", "content": ""} if role else (
                {} if piece is MISSING else {"content": piece})
            choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
            kind = "chat.completion.chunk"
        else:
            text = "" if piece is MISSING else piece
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
            kind = "text_completion"
        return {"id": self.rid, "object": kind, "created": CREATED, "model": self.model,
                "choices": [choice]}

    def native_end(self, content: Any) -> dict[str, Any]:
        """llama.cpp's last object: ``stop: true`` with why and how many tokens."""
        return {"index": 0, "content": content, "stop": True, "model": self.model,
                "stop_type": "limit" if self.finish_reason == "length" else "eos",
                "tokens_predicted": self.completion_tokens}

    @property
    def lead_events(self) -> int:
        """How many events come before the first content chunk."""
        return 1 if self.api == "chat" else 0

    def events(self, content: Any = MISSING, choices: bool = True,
               lead: str = "") -> list[dict[str, Any]]:
        """All stream chunks: [role], content..., finish (+usage), [usage chunk].

        ``content`` replaces every content piece (e.g. None); ``lead`` is put in front
        of the first content piece; ``choices=False`` drops the key everywhere.
        """
        out = [self.chunk(role=True)] if self.api == "chat" else []
        pieces = self.pieces() or [""]
        if lead:
            pieces[0] = lead + pieces[0]
        if self.text or lead or content is not MISSING:
            out += [self.chunk(p if content is MISSING else content) for p in pieces]
        final = self.chunk(finish=self.finish_reason)
        if self.usage_mode == "final":
            final["usage"] = self.usage()
        out.append(final)
        if self.usage_mode == "chunk" or (self.usage_mode == "auto" and self.include_usage):
            out.append({"id": self.rid, "object": final["object"], "created": CREATED,
                        "model": self.model, "choices": [], "usage": self.usage()})
        if not choices:
            for event in out:
                event.pop("choices", None)
        return out


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """Fault ``name`` on completion requests numbered first..last (1-based, inclusive)."""

    name: str
    first: int = 1
    last: int | None = None

    def covers(self, n: int) -> bool:
        return n >= self.first and (self.last is None or n <= self.last)


@dataclass(slots=True)
class Exchange:
    """One request being answered, with the server settings that shape the bytes."""

    request: web.BaseRequest
    reply: Reply
    stream: bool
    per_chunk_s: float = 0.0
    wire_split: int | None = None
    huge_bytes: int = 10 * MB
    drip_interval_s: float = 1.0
    closing: asyncio.Event = field(default_factory=asyncio.Event)

    def gone(self) -> bool:
        """True when the client disconnected or the server is shutting down."""
        transport = self.request.transport
        return self.closing.is_set() or transport is None or transport.is_closing()

    async def pause(self, seconds: float) -> bool:
        """Sleep, waking early if the client goes away; returns False if it did."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while not self.gone():
            left = deadline - loop.time()
            if left <= 0:
                return True
            await asyncio.sleep(min(_POLL_S, left))
        return False


def sse(event: dict[str, Any] | bytes) -> bytes:
    """Frame one event as an SSE ``data:`` line (bytes are sent as the payload as-is)."""
    payload = event if isinstance(event, bytes) else orjson.dumps(event)
    return b"data: " + payload + b"\n\n"


def json_response(obj: dict[str, Any] | bytes, status: int = 200,
                  headers: dict[str, str] | None = None) -> web.Response:
    body = obj if isinstance(obj, bytes) else orjson.dumps(obj)
    return web.Response(status=status, body=body, headers=headers,
                        content_type="application/json")


async def open_stream(ex: Exchange, content_type: str = "text/event-stream",
                      length: int | None = None) -> web.StreamResponse:
    """Send status and headers now (chunked unless ``length`` is given)."""
    resp = web.StreamResponse(headers={"Content-Type": content_type,
                                       "Cache-Control": "no-cache"})
    if length is not None:
        resp.content_length = length
    await resp.prepare(ex.request)
    return resp


async def send_parts(resp: web.StreamResponse, parts: list[bytes], ex: Exchange) -> bool:
    """Write the parts (re-split to ``wire_split`` bytes if set); False if the client left."""
    if ex.wire_split:
        data, size = b"".join(parts), ex.wire_split
        parts = [data[i:i + size] for i in range(0, len(data), size)]
    elif not ex.per_chunk_s:
        parts = [b"".join(parts)]
    for i, part in enumerate(parts):
        if i and ex.per_chunk_s and not await ex.pause(ex.per_chunk_s):
            return False
        try:
            await resp.write(part)
        except ConnectionError:
            return False
    return True


async def hard_reset(ex: Exchange) -> None:
    """Let the client read what was sent, then abort the connection with a TCP RST."""
    await asyncio.sleep(_POLL_S)
    transport = ex.request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _cut_index(reply: Reply) -> int:
    """Events to keep for a cut stream: the lead plus about half of the content."""
    return reply.lead_events + max(1, len(reply.pieces()) // 2)


def _body_bytes(reply: Reply, fault: str | None) -> bytes:
    """The non-stream body: normal, or misshapen for the shape faults."""
    if fault == "invalid-json":
        return BAD_JSON_BODY
    if fault == "invalid-utf8":
        return orjson.dumps(reply.body(_MARK + reply.text)).replace(_MARK_BYTES, BAD_UTF8)
    if fault == "no-choices":
        return orjson.dumps(reply.body(choices=False))
    return orjson.dumps(reply.body(None if fault == "null-content" else MISSING))


def _stream_parts(reply: Reply, fault: str | None) -> list[bytes]:
    """The SSE byte parts: normal, or cut/misshapen for the stream and shape faults."""
    if fault == "sse-cut":
        return [sse(e) for e in reply.events()[:_cut_index(reply)]]
    if fault == "sse-no-done":
        return [sse(e) for e in reply.events()]
    if fault == "invalid-utf8":
        parts = [sse(e).replace(_MARK_BYTES, BAD_UTF8) for e in reply.events(lead=_MARK)]
    elif fault in ("no-choices", "null-content"):
        parts = [sse(e) for e in reply.events(None if fault == "null-content" else MISSING,
                                               choices=fault != "no-choices")]
    else:
        parts = [sse(e) for e in reply.events()]
        if fault == "invalid-json":
            parts.insert(min(len(parts), reply.lead_events + 1), BAD_JSON_EVENT)
    return parts if reply.api == "native" else [*parts, DONE]  # native: no [DONE]


async def _reset(ex: Exchange, fault: str) -> web.StreamResponse:
    """Status and headers (``reset-after-headers``) or part of the body, then a RST."""
    mid = fault == "reset-mid-body"
    if ex.stream:
        resp, part = await open_stream(ex), b"".join(_stream_parts(ex.reply, "sse-cut"))
    else:
        data = _body_bytes(ex.reply, None)
        resp, part = await open_stream(ex, "application/json", len(data)), data[:len(data) // 2]
    if not mid or await send_parts(resp, [part], ex):
        await hard_reset(ex)
    return resp


async def _huge(ex: Exchange, fault: str) -> web.StreamResponse:
    """About ``huge_bytes`` of content, written block by block (never held in memory)."""
    reply, sent = ex.reply, 0
    if ex.stream:
        resp = await open_stream(ex)
        head = [sse(reply.chunk(role=True))] if reply.api == "chat" else []
        block = sse(reply.chunk("x" * _BLOCK))
        ending = replace(reply, text="").events()[reply.lead_events:]
        tail = [sse(e) for e in ending] + [DONE]
    else:
        resp = await open_stream(ex, "application/json")
        before, after = orjson.dumps(reply.body(_MARK)).split(_MARK_BYTES)
        head, block, tail = [before], b"x" * _BLOCK, [after]
    if not await send_parts(resp, head, ex):
        return resp
    while sent < ex.huge_bytes:
        try:
            await resp.write(block)
        except ConnectionError:
            return resp
        sent += len(block)
    await send_parts(resp, tail, ex)
    return resp


async def _drip(ex: Exchange, fault: str) -> web.StreamResponse:
    """Headers, then one byte per ``drip_interval_s`` until the client goes away."""
    if ex.stream:
        resp, pattern = await open_stream(ex), b": drip\n"
    else:
        resp, pattern = await open_stream(ex, "application/json"), b" "
    i = 0
    while True:
        try:
            await resp.write(pattern[i % len(pattern):][:1])
        except ConnectionError:
            return resp
        i += 1
        if not await ex.pause(ex.drip_interval_s):
            break
    if ex.closing.is_set():
        await hard_reset(ex)
    return resp


async def _hang(ex: Exchange, fault: str) -> web.StreamResponse:
    """Send nothing at all until the client disconnects (or the server stops)."""
    while await ex.pause(3600.0):
        pass
    if ex.closing.is_set():
        await hard_reset(ex)
    return web.Response(status=204)


async def _redirect(ex: Exchange, fault: str) -> web.StreamResponse:
    return web.Response(status=302, headers={"Location": "/redirected" + ex.request.path})


async def _http_error(ex: Exchange, fault: str) -> web.StreamResponse:
    status = int(fault.removeprefix("http-"))
    error = {"message": f"scripted fault {fault}", "type": "server_error", "code": status}
    headers = {"Retry-After": "7"} if status == 429 else None
    return json_response({"error": error}, status=status, headers=headers)


_SPECIAL: dict[str, Callable[[Exchange, str], Awaitable[web.StreamResponse]]] = {
    "reset-after-headers": _reset, "reset-mid-body": _reset, "huge": _huge, "drip": _drip,
    "hang": _hang, "redirect": _redirect,
    **{f"http-{code}": _http_error for code in (500, 502, 503, 429)},
}


async def respond(ex: Exchange, fault: str | None) -> web.StreamResponse:
    """Answer one request: normally (``fault`` None), or with the named fault."""
    special = _SPECIAL.get(fault or "")
    if special is not None:
        return await special(ex, fault or "")
    if not ex.stream:
        return json_response(_body_bytes(ex.reply, fault))
    resp = await open_stream(ex)
    await send_parts(resp, _stream_parts(ex.reply, fault), ex)
    return resp
