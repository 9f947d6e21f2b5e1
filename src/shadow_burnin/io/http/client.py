"""One side's client: send one request, return one ``SideReply``.

APIs (``RequestSpec.api``): ``chat`` (``/v1/chat/completions``), ``completions``
(``/v1/completions``) and ``native``: llama.cpp's own ``/completion`` (``prompt``,
``n_predict``, ``n_probs``; a stream of ``{"content", "stop"}`` events that ends with the
``"stop": true`` event instead of ``[DONE]``).

Server trouble never raises out of ``SideClient.complete``: every failure is mapped here,
once, to a short error code (``connection-refused``, ``timeout``, ``http-503`` …) that is
recorded in the round. Codes, with an optional ``": detail"`` after them:

    connection-refused  connection-reset  tls  timeout  http-<status>  redirect
    invalid-json  invalid-utf8  bad-shape  too-large  stream-cut  stream-incomplete
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import aiohttp
import orjson

from shadow_burnin.core.logprobs import parse as parse_logprobs
from shadow_burnin.core.prompt import Prompt, chat_messages, completion_text
from shadow_burnin.core.records import SideReply
from shadow_burnin.io.http import sse
from shadow_burnin.io.http.reply_error import ReplyError

Api = Literal["chat", "completions", "native"]
APIS: tuple[Api, ...] = ("chat", "completions", "native")
_PATHS = {"chat": "/v1/chat/completions", "completions": "/v1/completions",
          "native": "/completion"}
# llama.cpp's stop_type → the OpenAI finish_reason it stands for
_NATIVE_FINISH = {"limit": "length", "eos": "stop", "word": "stop"}


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where one side lives. ``api_key`` is the secret itself (never printed)."""

    url: str
    model: str | None = None
    api_key: str | None = field(default=None, repr=False)
    insecure: bool = False


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """What every request of a run looks like (identical for both sides)."""

    api: Api = "chat"
    max_tokens: int = 64
    stream: bool = True
    timeout_s: float = 120.0
    extra: dict[str, Any] = field(default_factory=dict)
    max_reply_bytes: int = 4 * 1024 * 1024
    logprobs: int = 0


def build_body(spec: RequestSpec, prompt: Prompt, model: str | None) -> dict[str, Any]:
    """The request body; both sides of a round get exactly this (but for ``model``).
    A prompt's own ``params`` (a captured request's) go first; the run's fields win."""
    body: dict[str, Any] = dict(prompt.params) if prompt.params else {}
    if model:
        body["model"] = model
    if spec.api == "chat":
        body["messages"] = chat_messages(prompt)
    else:
        body["prompt"] = completion_text(prompt)
    body["temperature"] = 0
    body["n_predict" if spec.api == "native" else "max_tokens"] = (
        prompt.max_tokens or spec.max_tokens)
    body["stream"] = spec.stream
    if spec.logprobs:
        if spec.api == "native":
            body["n_probs"] = spec.logprobs
        elif spec.api == "chat":
            body["logprobs"] = True
            body["top_logprobs"] = spec.logprobs
        else:
            body["logprobs"] = spec.logprobs
    body.update(spec.extra)
    return body


class SideClient:
    """Async client for one server; reuse one instance for a whole run (keep-alive)."""

    def __init__(self, endpoint: Endpoint, spec: RequestSpec) -> None:
        self.endpoint = endpoint
        self.spec = spec
        self._session: aiohttp.ClientSession | None = None
        self._url = endpoint.url.rstrip("/") + _PATHS[spec.api]
        self._headers = {"Content-Type": "application/json"}
        if endpoint.api_key:
            self._headers["Authorization"] = f"Bearer {endpoint.api_key}"

    def __repr__(self) -> str:
        return f"SideClient(url={self.endpoint.url!r}, api={self.spec.api!r})"

    def set_logprobs(self, k: int) -> None:
        """Ask this side for ``k`` top logprobs from now on (0: none), e.g. after it
        turned out not to support them."""
        self.spec = replace(self.spec, logprobs=k)

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

    async def complete(self, prompt: Prompt, model: str | None = None) -> SideReply:
        """Send one request; every failure becomes ``SideReply(error=...)``."""
        body = orjson.dumps(build_body(self.spec, prompt, model or self.endpoint.model))
        return await self.post(body)

    async def post(self, body: bytes) -> SideReply:
        """Send a prepared request body (bytes) and read the reply.

        A pooled keep-alive connection that the server had already closed fails before
        any status line arrives; that attempt is repeated once on a fresh connection (the
        request never reached the server), and only the second attempt is timed.
        """
        reply = await self._attempt(body)
        if reply.status is None and reply.error is not None and \
                reply.error.startswith("connection-reset"):
            reply = await self._attempt(body)
        return reply

    async def _attempt(self, body: bytes) -> SideReply:
        reply = SideReply(text=None)
        start = time.perf_counter()
        try:
            async with asyncio.timeout(self.spec.timeout_s):
                async with self.session.post(
                    self._url, data=body, headers=self._headers, allow_redirects=False
                ) as resp:
                    reply.status = resp.status
                    _check_status(resp)
                    if self.spec.stream:
                        await self._read_stream(resp, reply, start)
                    else:
                        await self._read_whole(resp, reply)
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
        return reply

    async def _read_whole(self, resp: aiohttp.ClientResponse, reply: SideReply) -> None:
        raw = await _read_capped(resp, self.spec.max_reply_bytes)
        data = _decode_json(raw)
        if self.spec.api == "native":
            return self._native_whole(data, reply)
        choice = _first_choice(data)
        if self.spec.api == "chat":
            message = choice.get("message")
            text = message.get("content") if isinstance(message, dict) else None
        else:
            text = choice.get("text")
        if not isinstance(text, str):
            raise ReplyError("bad-shape", "reply content is null or not a string")
        reply.text = text
        reply.finish_reason = _opt_str(choice.get("finish_reason"))
        reply.completion_tokens = _usage_tokens(data)
        if self.spec.logprobs:
            _keep_tokens(reply, choice.get("logprobs"), text)

    def _native_whole(self, data: dict[str, Any], reply: SideReply) -> None:
        text = data.get("content")
        if not isinstance(text, str):
            raise ReplyError("bad-shape", "reply content is null or not a string")
        reply.text = text
        _native_end(data, reply)
        if self.spec.logprobs:
            _keep_tokens(reply, data.get("completion_probabilities"), text)

    async def _read_stream(
        self, resp: aiohttp.ClientResponse, reply: SideReply, start: float
    ) -> None:
        parts: list[str] = []
        null_seen = False
        logprob_parts: list[Any] = []
        done = False
        finished = False
        api = self.spec.api
        want_logprobs = bool(self.spec.logprobs)
        # closed here, not by the loop's async-generator finaliser after the break
        stream = sse.batches(resp.content, self.spec.max_reply_bytes)
        try:
            async with contextlib.aclosing(stream):
                async for batch in stream:
                    for payload in batch:
                        if payload == b"[DONE]":
                            done = True
                            break
                        chunk = _decode_json(payload)
                        if api == "native":
                            piece = _native_piece(chunk)
                            if piece:
                                if reply.ttft_ms is None:
                                    reply.ttft_ms = round(
                                        (time.perf_counter() - start) * 1000.0, 3)
                                parts.append(piece)
                            if want_logprobs and chunk.get("completion_probabilities"):
                                logprob_parts.append(chunk)
                            if chunk.get("stop") is True:
                                _native_end(chunk, reply)
                                done = True
                                break
                            continue
                        _check_error_event(chunk, "choices")
                        tokens = _usage_tokens(chunk) if "usage" in chunk else None
                        if tokens is not None:
                            reply.completion_tokens = tokens
                        choices = chunk.get("choices")
                        if not choices:
                            if choices is None and tokens is None:
                                raise ReplyError("bad-shape", "stream chunk without choices")
                            continue
                        choice = _first_choice(chunk)
                        piece = _delta_text(choice, api)
                        if piece:
                            if reply.ttft_ms is None:
                                reply.ttft_ms = round((time.perf_counter() - start) * 1000.0,
                                                      3)
                            parts.append(piece)
                        elif piece is None and not null_seen:
                            null_seen = _explicit_null(choice)
                        if want_logprobs and choice.get("logprobs") is not None:
                            logprob_parts.append(choice["logprobs"])
                        reason = choice.get("finish_reason")
                        if reason:
                            reply.finish_reason = str(reason)
                            finished = True
                    if done:
                        reply.latency_ms = round((time.perf_counter() - start) * 1000.0, 3)
                        break
        finally:
            reply.text = "".join(parts)
            if want_logprobs:
                _keep_tokens(reply, logprob_parts, reply.text)
        if done and not resp.content.at_eof():
            await _drain(resp.content, self.spec.max_reply_bytes)
        if null_seen and not parts:
            raise ReplyError("bad-shape", "stream content is null and no text arrived")
        if not done:
            if finished:
                raise ReplyError("stream-incomplete", "stream ended without [DONE]")
            reply.truncated = bool(parts)
            raise ReplyError("stream-cut", f"stream ended after {len(reply.text)} characters")


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
        raise ReplyError("redirect", f"{status} to {resp.headers.get('Location', '?')}",
                         status=status)
    if status >= 400:
        detail = ""
        if status == 429 and "Retry-After" in resp.headers:
            detail = f"retry-after {resp.headers['Retry-After'][:20]}"
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


def _decode_json(raw: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ReplyError("invalid-utf8", "reply is not valid UTF-8") from None
        raise ReplyError("invalid-json", str(exc)[:120]) from None
    if not isinstance(data, dict):
        raise ReplyError("bad-shape", "reply is not a JSON object")
    return data


def _first_choice(data: dict[str, Any]) -> dict[str, Any]:
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ReplyError("bad-shape", "no choices in reply")
    return choices[0]


def _delta_text(choice: dict[str, Any], api: Api) -> str | None:
    """A chunk's text; None when it carries none (chat role/finish chunks)."""
    if api == "chat":
        delta = choice.get("delta")
        if delta is None:
            delta = choice.get("message")
        if not isinstance(delta, dict):
            raise ReplyError("bad-shape", "stream chunk without delta")
        piece = delta.get("content")
    else:
        piece = choice.get("text")
        if piece is None and not choice.get("finish_reason"):
            raise ReplyError("bad-shape", "completion chunk text is null")
    if piece is not None and not isinstance(piece, str):
        raise ReplyError("bad-shape", "content is not a string")
    return piece


def _check_error_event(chunk: dict[str, Any], payload: str) -> None:
    """A stream event that carries an ``error`` instead of its ``payload`` key."""
    if "error" in chunk and payload not in chunk:
        raise ReplyError("bad-shape", f"error event: {str(chunk['error'])[:120]}")


def _native_piece(chunk: dict[str, Any]) -> str | None:
    """The text of one native stream event (``content``; may be empty)."""
    _check_error_event(chunk, "content")
    piece = chunk.get("content")
    if piece is not None and not isinstance(piece, str):
        raise ReplyError("bad-shape", "content is not a string")
    if piece is None and chunk.get("stop") is not True:
        raise ReplyError("bad-shape", "stream event without content")
    return piece


def _native_end(data: dict[str, Any], reply: SideReply) -> None:
    """finish_reason and completion_tokens from a native reply's last object."""
    kind = data.get("stop_type")
    reply.finish_reason = _NATIVE_FINISH.get(kind, kind) if isinstance(kind, str) else None
    tokens = data.get("tokens_predicted")
    if isinstance(tokens, int) and not isinstance(tokens, bool):
        reply.completion_tokens = tokens


def _explicit_null(choice: dict[str, Any]) -> bool:
    """A chat delta that says ``content: null`` while carrying nothing else."""
    delta = choice.get("delta")
    return (isinstance(delta, dict) and "content" in delta and delta["content"] is None
            and not (delta.keys() - {"content"}))


def _usage_tokens(data: dict[str, Any]) -> int | None:
    usage = data.get("usage")
    if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
        return usage["completion_tokens"]
    return None


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def _os_reason(exc: aiohttp.ClientConnectorError) -> str:
    err = exc.os_error
    return (err.strerror or type(err).__name__) if err is not None else "connect failed"
