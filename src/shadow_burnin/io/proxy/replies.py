"""A reply as the mirror collects it (bytes, arrival times) and its reading, in one go.

The mirror does not parse a reply while it passes: the client's path only keeps v1's
body bytes as they go by (``Collector``: a list append per read, capped), and the shadow
(its worker, in the shadow process by default) reads the whole thing once it is over
(``parse``), with the run's own dialects (``io.http.dialects``) and the same error codes
as ``io.http.client.SideClient``: ``http-<status>`` (``retry-after`` on a 429),
``redirect``, ``invalid-json``, ``invalid-utf8``, ``bad-shape``, ``too-large``,
``stream-cut``, ``stream-incomplete``, ``not-a-stream``; a JSON reply to a streamed
request is read whole and marked ``unstreamed``. A stream's time to first text is the
arrival time of the read that brought it (``RawReply.times``), its latency the arrival of
the read that ended it; a whole reply's latency is the time it was complete.

A transport failure (``RawReply.error``: the exchange was cut, timed out, refused) wins
over what the bytes say; a stream's text up to the cut is kept, marked ``truncated``.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterator
from typing import Any

import msgspec

from shadow_burnin.core.records import SideReply
from shadow_burnin.io.http.client import retry_after
from shadow_burnin.io.http.dialects import StreamAcc, decode_json, dialect_for
from shadow_burnin.io.http.reply_error import ReplyError
from shadow_burnin.io.http.sse import Splitter
from shadow_burnin.secrets import MIN_SECRET_LEN, REDACTED, redact

# reply headers the reading needs (lower case)
WANTED = frozenset((b"content-type", b"content-encoding", b"content-length", b"location",
                    b"retry-after"))


class RawReply(msgspec.Struct):
    """One side's reply as it came: head fields, body bytes (up to the cap), times."""

    start: float  # perf_counter when the request went out (or came in, for v1)
    stream: bool = False  # keep a time per read
    status: int | None = None
    headers: dict[bytes, bytes] = msgspec.field(default_factory=dict)  # ``WANTED`` ones only
    chunks: list[bytes] = msgspec.field(default_factory=list)
    times: list[float] = msgspec.field(default_factory=list)  # per chunk (streams only)
    size: int = 0  # body bytes that arrived (kept or not)
    end: float | None = None  # perf_counter when the reply was complete (or failed)
    error: str | None = None  # the transport's outcome (None: the reply came whole)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:  # one tuple (see ``Mirrored``)
        return (RawReply, (self.start, self.stream, self.status, self.headers, self.chunks,
                           self.times, self.size, self.end, self.error))


class Collector:
    """Keeps the body bytes of a reply as they pass, up to ``cap`` bytes and the read
    that crosses it (enough for ``parse`` to say ``too-large``); then only counts."""

    __slots__ = ("cap", "raw")

    def __init__(self, raw: RawReply, cap: int) -> None:
        self.raw = raw
        self.cap = cap

    def __call__(self, chunk: bytes, arrived: float | None = None) -> None:
        """``chunk`` came in a read that arrived at ``arrived`` (``perf_counter``; now if
        not given)."""
        raw = self.raw
        if raw.size <= self.cap:
            raw.chunks.append(chunk)
            if raw.stream:
                raw.times.append(time.perf_counter() if arrived is None else arrived)
        raw.size += len(chunk)


def _ms(t: float, start: float) -> float:
    return round((t - start) * 1000.0, 3)


def _check_status(raw: RawReply) -> None:
    status = raw.status or 0
    if 300 <= status < 400:
        location = raw.headers.get(b"location", b"?").decode("latin-1")
        raise ReplyError("redirect", f"{status} to {' '.join(location.split())[:200]}",
                         status=status)
    if status >= 400:
        detail = ""
        if status == 429 and b"retry-after" in raw.headers:
            after = retry_after(raw.headers[b"retry-after"].decode("latin-1"))
            detail = f"retry-after {after}" if after is not None else ""
        raise ReplyError(f"http-{status}", detail, status=status)
    if status < 200:
        raise ReplyError(f"http-{status}", status=status)


def _media(raw: RawReply) -> str:
    return raw.headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower().decode(
        "latin-1")


def _body(raw: RawReply) -> Iterator[tuple[int, bytes]]:
    """(index of the read, its bytes), inflated when the reply is gzip or deflate."""
    encoding = raw.headers.get(b"content-encoding", b"identity").strip().lower()
    if encoding not in (b"gzip", b"x-gzip", b"deflate"):
        yield from enumerate(raw.chunks)
        return
    inflate = zlib.decompressobj(wbits=47)  # gzip or zlib-wrapped deflate
    last = -1
    for i, chunk in enumerate(raw.chunks):
        last = i
        try:
            data = inflate.decompress(chunk)
        except zlib.error:
            yield i, b"\xff"  # undecodable: the parser says so
            return
        if data:
            yield i, data
    try:
        tail = inflate.flush()
    except zlib.error:
        tail = b""
    if tail:
        yield max(last, 0), tail


def _batches(raw: RawReply, limit: int) -> Iterator[tuple[int, list[bytes]]]:
    """The SSE ``data`` payloads completed by each read, with the read's index
    (``io.http.sse.Splitter``: the run's rules and cap on bytes)."""
    split = Splitter(limit)
    last = len(raw.chunks) - 1
    for i, chunk in _body(raw):
        last = i
        out = split.feed(chunk)
        if out:
            yield i, out
    tail = split.end()
    if tail:
        yield last, tail


def _whole(raw: RawReply, api: str, limit: int, reply: SideReply) -> None:
    length = raw.headers.get(b"content-length")
    if length is not None and length.strip().isdigit() and int(length) > limit:
        raise ReplyError("too-large", f"{int(length)} bytes announced")
    body = b"".join(chunk for _i, chunk in _body(raw))
    if len(body) > limit:
        raise ReplyError("too-large", f"reply over {limit} bytes")
    text, _logprobs = dialect_for(api).whole(decode_json(body), reply)
    reply.text = text


def _stream(raw: RawReply, api: str, limit: int, reply: SideReply) -> None:
    dialect = dialect_for(api)
    acc = StreamAcc()
    events = 0
    times = raw.times
    end = raw.end if raw.end is not None else raw.start
    try:
        for i, batch in _batches(raw, limit):
            for payload in batch:
                events += 1
                before = len(acc.parts)
                dialect.event(payload, acc, reply)
                if len(acc.parts) > before and reply.ttft_ms is None:
                    reply.ttft_ms = _ms(times[i] if i < len(times) else end, raw.start)
                if acc.done:
                    break
            if acc.done:
                reply.latency_ms = _ms(times[i] if i < len(times) else end, raw.start)
                break
    finally:
        reply.text = "".join(acc.parts)
    if acc.null_seen and not acc.parts:
        raise ReplyError("bad-shape", "stream content is null and no text arrived")
    if not acc.done:
        if acc.finished:
            raise ReplyError("stream-incomplete", "stream ended without [DONE]")
        if not events and _media(raw) != "text/event-stream":
            ctype = _media(raw)[:40] or "none"
            raise ReplyError("not-a-stream", f"content-type {ctype}, no SSE events")
        reply.truncated = bool(acc.parts)
        raise ReplyError("stream-cut", f"stream ended after {len(reply.text)} characters")


def parse(raw: RawReply, api: str, stream: bool, limit: int) -> SideReply:
    """The reply's ``SideReply`` (see the module doc); never raises."""
    reply = SideReply(text=None, status=raw.status)
    if raw.status is None:
        reply.error = raw.error or "bad-shape: no reply"
    else:
        try:
            _check_status(raw)
            if stream and _media(raw) == "application/json":
                reply.extra["unstreamed"] = True
                if raw.error is None:
                    _whole(raw, api, limit, reply)
            elif stream:
                _stream(raw, api, limit, reply)
            elif raw.error is None:
                _whole(raw, api, limit, reply)
        except ReplyError as exc:
            reply.error = exc.message()
        except Exception as exc:  # a reading bug must not lose the round
            reply.error = f"bad-shape: {type(exc).__name__}"
        ended = stream and reply.error is None and "unstreamed" not in reply.extra
        if raw.error is not None and not ended:  # (a stream's end marker came: whole)
            reply.error = raw.error
            if reply.text:
                reply.truncated = True
    if reply.latency_ms is None or reply.error is not None:
        reply.latency_ms = _ms(raw.end if raw.end is not None else time.perf_counter(),
                               raw.start)
    if reply.error is not None:
        reply.extra.pop("unstreamed", None)
        if not reply.truncated and not reply.error.startswith("stream-incomplete"):
            reply.text = None
    return reply


def scrub(reply: SideReply, secrets: tuple[str, ...]) -> SideReply:
    """Redact what a server echoed (``SideClient``'s rule): error details always, a
    reply text only where it holds one of our secrets."""
    if reply.error is not None:
        reply.error = redact(reply.error, secrets)
    text = reply.text
    if text and secrets and any(s in text for s in secrets):
        for secret in sorted(secrets, key=len, reverse=True):
            text = text.replace(secret, REDACTED)
        reply.text = text
        reply.extra["redacted"] = True
    return reply


def secrets_of(*keys: str | None) -> tuple[str, ...]:
    return tuple(sorted({k for k in keys if k and len(k) >= MIN_SECRET_LEN}))
