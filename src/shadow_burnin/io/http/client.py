"""One side's client: send one request, return one ``SideReply``.

APIs (``RequestSpec.api``) are dialects (``io.http.dialects``): ``chat``
(``/v1/chat/completions``), ``completions`` (``/v1/completions``) and ``native``:
llama.cpp's own ``/completion`` (``prompt``, ``n_predict``, ``n_probs``; a stream of
``{"content", "stop"}`` events that ends with the ``"stop": true`` event instead of
``[DONE]``). The client does the transport, the caps and the error mapping; a dialect
only builds the body and reads a reply or a stream event.

Server trouble never raises out of ``SideClient.complete``: every failure is mapped here,
once, to a short error code (``connection-refused``, ``timeout``, ``http-503`` …) that is
recorded in the round. Codes, with an optional ``": detail"`` after them:

    connection-refused  connection-reset  tls  timeout  http-<status>  redirect
    invalid-json  invalid-utf8  bad-shape  too-large  stream-cut  stream-incomplete
    not-a-stream

Anything a server echoes back into an error (a header, an error body) is redacted
against the run's secrets (``shadow_burnin.secrets.redact``) before it is stored; a
header value kept in a code is validated first (a ``Retry-After`` is a number of seconds
or an HTTP date, else it is dropped). A reply text that contains a secret has it replaced
too (``"redacted": true`` on the side).

Decisions on odd but valid replies: a lone surrogate escape (``"\\ud800"``, valid JSON
that orjson refuses) is accepted: the text keeps the surrogate, compared byte for byte
via ``surrogatepass``, and stored losslessly (``core.records``: ``text_escape``). A plain
JSON completion (``Content-Type: application/json``) answering a streamed request is
accepted as the reply (``"unstreamed": true``, no TTFT); any other non-SSE answer to a
streamed request is ``not-a-stream``; ``stream-cut`` is kept for an SSE stream that
ended early.

One retry policy: a pooled keep-alive connection that the server had already closed
fails before any status line arrives; that attempt is repeated once on a fresh
connection (the request never reached the server). Nothing else retries a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import re
import ssl
import time
from collections.abc import Iterable
from typing import Any, cast

import aiohttp
import msgspec
import orjson

from shadow_burnin.config import RequestConfig
from shadow_burnin.core.logprobs import parse as parse_logprobs
from shadow_burnin.core.prompt import Prompt
from shadow_burnin.core.records import SideReply
from shadow_burnin.core.structs import repr_without, shown_fields
from shadow_burnin.io.http import sse
from shadow_burnin.io.http.dialects import (
    APIS,
    Api,
    Dialect,
    StreamAcc,
    decode_json,
    dialect_for,
)
from shadow_burnin.io.http.reply_error import ReplyError
from shadow_burnin.secrets import MIN_SECRET_LEN, REDACTED, redact

__all__ = ["APIS", "TOKENS_KEY", "Api", "Endpoint", "RequestSpec", "SideClient",
           "build_body", "retry_after"]


_HIDDEN = frozenset({"api_key"})


class Endpoint(msgspec.Struct, frozen=True):
    """Where one side lives. ``api_key`` is the secret itself (never printed)."""

    url: str
    model: str | None = None
    api_key: str | None = None  # not in repr
    insecure: bool = False

    def __repr__(self) -> str:  # never shows the api key
        return repr_without(self, _HIDDEN)

    def __rich_repr__(self) -> list[tuple[str, Any]]:
        return list(shown_fields(self, _HIDDEN))


_REQUEST = RequestConfig()  # the defaults are the [request] section's
_DEFAULT_API = cast(Api, _REQUEST.api)


class RequestSpec(msgspec.Struct, frozen=True):
    """What every request of a run looks like (identical for both sides)."""

    api: Api = _DEFAULT_API
    max_tokens: int = _REQUEST.max_tokens
    stream: bool = _REQUEST.stream
    timeout_s: float = _REQUEST.timeout
    extra: dict[str, Any] = msgspec.field(default_factory=dict)
    max_reply_bytes: int = _REQUEST.max_reply_bytes
    logprobs: int = _REQUEST.logprobs


def build_body(spec: RequestSpec, prompt: Prompt, model: str | None,
               logprobs: int | None = None) -> dict[str, Any]:
    """The request body; both sides of a round get exactly this (but for ``model``).
    A prompt's own ``params`` (a captured request's) go first; the run's fields win.
    ``logprobs``: this request's top-K (default: the spec's)."""
    k = spec.logprobs if logprobs is None else logprobs
    body = dialect_for(spec.api).body(prompt, model, max_tokens=prompt.max_tokens or
                                      spec.max_tokens, stream=spec.stream, logprobs=k,
                                      extra=spec.extra)
    # a prompt's own ``params`` (a captured request's) go first; the run's fields win
    return {**prompt.params, **body} if prompt.params else body


_SECONDS = re.compile(r"[0-9]{1,10}")


def retry_after(value: str) -> str | None:
    """A ``Retry-After`` value as kept in an error code: a number of seconds, or an HTTP
    date (RFC 9110), normalised; None for anything else (it is dropped)."""
    value = value.strip()
    if _SECONDS.fullmatch(value):
        return str(int(value))
    if len(value) > 40:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return email.utils.format_datetime(when, usegmt=True)


class SideClient:
    """Async client for one server; reuse one instance for a whole run (keep-alive).

    ``logprobs`` is this side's current top-K (from the spec; a side found not to give
    them is set to 0 by forensics). Each request builds its own body from it, or from an
    explicit per-request value: the shared spec is never changed.
    """

    def __init__(self, endpoint: Endpoint, spec: RequestSpec,
                 secrets: Iterable[str | None] = ()) -> None:
        self.endpoint = endpoint
        self.spec = spec
        self.dialect: Dialect = dialect_for(spec.api)
        self.logprobs = spec.logprobs
        self._session: aiohttp.ClientSession | None = None
        self._url = endpoint.url.rstrip("/") + self.dialect.path
        self._headers = {"Content-Type": "application/json"}
        if endpoint.api_key:
            self._headers["Authorization"] = f"Bearer {endpoint.api_key}"
        self.secrets = tuple(sorted({s for s in (endpoint.api_key, *secrets)
                                     if s and len(s) >= MIN_SECRET_LEN}))

    def __repr__(self) -> str:
        return f"SideClient(url={self.endpoint.url!r}, api={self.spec.api!r})"

    def set_logprobs(self, k: int) -> None:
        """Ask this side for ``k`` top logprobs from now on (0: none), e.g. after it
        turned out not to support them. The request spec is left alone."""
        self.logprobs = k

    async def __aenter__(self) -> SideClient:
        ssl_ctx: ssl.SSLContext | bool = not self.endpoint.insecure
        connector = aiohttp.TCPConnector(limit=0, ssl=ssl_ctx, enable_cleanup_closed=True)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None),
            json_serialize=lambda o: orjson.dumps(o).decode(),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("SideClient used outside 'async with'")
        return self._session

    async def list_models(self) -> list[str]:
        """Model ids from ``GET /v1/models``; empty list when the server cannot say."""
        url = self.endpoint.url.rstrip("/") + "/v1/models"
        try:
            async with asyncio.timeout(min(self.spec.timeout_s, 30.0)):
                async with self.session.get(url, headers=self._headers,
                                            allow_redirects=False) as resp:
                    if resp.status != 200:
                        return []
                    data = orjson.loads(await resp.read())
            return [m["id"] for m in data.get("data", [])
                    if isinstance(m, dict) and isinstance(m.get("id"), str)]
        except (aiohttp.ClientError, OSError, TimeoutError, orjson.JSONDecodeError,
                AttributeError, KeyError, TypeError):
            return []

    def body(self, prompt: Prompt, model: str | None = None, *,
             logprobs: int | None = None) -> dict[str, Any]:
        """This side's request body for ``prompt`` (``logprobs``: this request only)."""
        return build_body(self.spec, prompt, model or self.endpoint.model,
                          self.logprobs if logprobs is None else logprobs)

    async def complete(self, prompt: Prompt, model: str | None = None, *,
                       logprobs: int | None = None) -> SideReply:
        """Send one request; every failure becomes ``SideReply(error=...)``."""
        body = self.body(prompt, model, logprobs=logprobs)
        k = self.logprobs if logprobs is None else logprobs
        return await self.post(orjson.dumps(body), want_logprobs=bool(k))

    async def post(self, body: bytes, *, want_logprobs: bool | None = None) -> SideReply:
        """Send a prepared request body (bytes) and read the reply (see the module doc
        for the one retry); only the attempt that counts is timed."""
        want = bool(self.logprobs) if want_logprobs is None else want_logprobs
        reply = await self._attempt(body, want)
        if reply.status is None and reply.error is not None and \
                reply.error.startswith("connection-reset"):
            reply = await self._attempt(body, want)
        return self._scrub(reply)

    def _scrub(self, reply: SideReply) -> SideReply:
        """Redact what the server echoed: error details always (secrets and any
        ``Bearer`` token), a reply text only where it holds one of our secrets."""
        if reply.error is not None:
            reply.error = redact(reply.error, self.secrets)
        text = reply.text
        if text and self.secrets and any(s in text for s in self.secrets):
            for secret in sorted(self.secrets, key=len, reverse=True):
                text = text.replace(secret, REDACTED)
            reply.text = text
            reply.extra["redacted"] = True
        return reply

    async def _attempt(self, body: bytes, want_logprobs: bool) -> SideReply:
        reply = SideReply(text=None)
        start = time.perf_counter()
        try:
            async with asyncio.timeout(self.spec.timeout_s):
                async with self.session.post(
                    self._url, data=body, headers=self._headers, allow_redirects=False
                ) as resp:
                    reply.status = resp.status
                    _check_status(resp)
                    if self.spec.stream and _is_plain_json(resp):
                        reply.extra["unstreamed"] = True
                        await self._read_whole(resp, reply, want_logprobs)
                    elif self.spec.stream:
                        await self._read_stream(resp, reply, start, want_logprobs)
                    else:
                        await self._read_whole(resp, reply, want_logprobs)
        except ReplyError as exc:
            reply.error = exc.message()
        except TimeoutError:
            reply.error = f"timeout: no complete reply within {self.spec.timeout_s:g} s"
            if reply.text:
                reply.truncated = True
        except aiohttp.ClientConnectorCertificateError as exc:
            cert = exc.certificate_error
            reason = getattr(cert, "verify_message", None) or type(cert).__name__
            reply.error = f"tls: certificate verify failed: {reason}"
        except aiohttp.ClientConnectorSSLError as exc:
            reply.error = f"tls: {_os_reason(exc)}"
        except aiohttp.ClientConnectorError as exc:
            reply.error = f"connection-refused: {_os_reason(exc)}"
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError,
                aiohttp.ClientOSError, ConnectionError) as exc:
            reply.error = f"connection-reset: {type(exc).__name__}"
            if reply.text:
                reply.truncated = True
        except aiohttp.ClientResponseError as exc:
            reply.error = f"bad-shape: {exc.message}"
        except aiohttp.ClientError as exc:
            reply.error = f"connection-reset: {type(exc).__name__}"
        if reply.latency_ms is None or reply.error is not None:
            reply.latency_ms = round((time.perf_counter() - start) * 1000.0, 3)
        if reply.error is not None and not reply.truncated and \
                not reply.error.startswith("stream-incomplete"):
            reply.text = None
        if reply.error is not None:
            reply.extra.pop("unstreamed", None)
        return reply

    async def read_reply(self, resp: Any, reply: SideReply, start: float, *,
                         want_logprobs: bool = False) -> None:
        """Parse a response obtained elsewhere (the mirror's pass-through) with this
        side's dialect, caps and error codes; raises ReplyError like a request would."""
        _check_status(resp)
        if self.spec.stream:
            await self._read_stream(resp, reply, start, want_logprobs)
        else:
            await self._read_whole(resp, reply, want_logprobs)

    async def _read_whole(self, resp: aiohttp.ClientResponse, reply: SideReply,
                          want_logprobs: bool) -> None:
        raw = await _read_capped(resp, self.spec.max_reply_bytes)
        text, raw_logprobs = self.dialect.whole(decode_json(raw), reply)
        reply.text = text
        if want_logprobs:
            _keep_tokens(reply, raw_logprobs, text)

    async def _read_stream(self, resp: aiohttp.ClientResponse, reply: SideReply,
                           start: float, want_logprobs: bool) -> None:
        acc = StreamAcc(want_logprobs=want_logprobs)
        dialect = self.dialect
        events = 0
        # closed here, not by the loop's async-generator finaliser after the break
        stream = sse.batches(resp.content, self.spec.max_reply_bytes)
        try:
            async with contextlib.aclosing(stream):
                async for batch in stream:
                    for payload in batch:
                        events += 1
                        before = len(acc.parts)
                        dialect.event(payload, acc, reply)
                        if len(acc.parts) > before and reply.ttft_ms is None:
                            reply.ttft_ms = round((time.perf_counter() - start) * 1000.0, 3)
                        if acc.done:
                            break
                    if acc.done:
                        reply.latency_ms = round((time.perf_counter() - start) * 1000.0, 3)
                        break
        finally:
            reply.text = "".join(acc.parts)
            if want_logprobs:
                _keep_tokens(reply, acc.logprobs, reply.text)
        if acc.done and not resp.content.at_eof():
            await _drain(resp.content, self.spec.max_reply_bytes)
        if acc.null_seen and not acc.parts:
            raise ReplyError("bad-shape", "stream content is null and no text arrived")
        if not acc.done:
            if acc.finished:
                raise ReplyError("stream-incomplete", "stream ended without [DONE]")
            if not events and not _is_sse(resp):
                ctype = resp.content_type[:40] or "none"
                raise ReplyError("not-a-stream", f"content-type {ctype}, no SSE events")
            reply.truncated = bool(acc.parts)
            raise ReplyError("stream-cut", f"stream ended after {len(reply.text)} characters")


def _is_plain_json(resp: aiohttp.ClientResponse) -> bool:
    return resp.content_type == "application/json"


def _is_sse(resp: aiohttp.ClientResponse) -> bool:
    return resp.content_type == "text/event-stream"


TOKENS_KEY = "_tokens"  # transient: the forensics step turns it into compact fields


def _keep_tokens(reply: SideReply, raw: Any, text: str | None) -> None:
    """Parsed logprobs (``core.verdict.Token`` list, None if the reply had none) under
    ``reply.extra["_tokens"]``; never written to the log as is."""
    reply.extra[TOKENS_KEY] = parse_logprobs(raw, text) if raw else None


DRAIN_S = 0.02  # how long to wait for the end of a body after its [DONE]


async def _drain(stream: aiohttp.StreamReader, limit: int) -> None:
    """Read what follows ``[DONE]`` (normally just the end of the chunked body, a moment
    later) so that the connection goes back to the pool: aiohttp closes a connection
    released before the end of its body, and the next request then has to connect
    again. Gives up silently after ``DRAIN_S`` or ``limit`` bytes, or on any error (the
    reply is complete; the connection is then simply not reused)."""
    with contextlib.suppress(TimeoutError, aiohttp.ClientError, OSError):
        async with asyncio.timeout(DRAIN_S):
            total = 0
            while total <= limit:
                chunk = await stream.readany()
                if not chunk:
                    return
                total += len(chunk)


def _check_status(resp: aiohttp.ClientResponse) -> None:
    status = resp.status
    if 300 <= status < 400:
        location = resp.headers.get("Location", "?")
        raise ReplyError("redirect", f"{status} to {_one_line(location)[:200]}",
                         status=status)
    if status >= 400:
        detail = ""
        if status == 429 and "Retry-After" in resp.headers:
            after = retry_after(resp.headers["Retry-After"])
            detail = f"retry-after {after}" if after is not None else ""
        raise ReplyError(f"http-{status}", detail, status=status)
    if status < 200 or status >= 300:
        raise ReplyError(f"http-{status}", status=status)


async def _read_capped(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    if resp.content_length is not None and resp.content_length > limit:
        raise ReplyError("too-large", f"{resp.content_length} bytes announced")
    buf = bytearray()
    async for chunk in resp.content.iter_chunked(1 << 16):
        buf += chunk
        if len(buf) > limit:
            raise ReplyError("too-large", f"reply over {limit} bytes")
    return bytes(buf)


def _os_reason(exc: aiohttp.ClientConnectorError) -> str:
    err = exc.os_error
    return (err.strerror or type(err).__name__) if err is not None else "connect failed"


def _one_line(text: str) -> str:
    return " ".join(text.split())
