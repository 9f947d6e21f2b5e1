"""The mirror's reverse proxy: clients are served by v1, a copy of each request goes to v2.

The client's path is ``io.proxy.relay``: raw asyncio protocols parsed by httptools, a
kept-alive pool of connections to v1, v1's reply relayed as it arrives (status and
headers but for hop-by-hop ones, body bytes unchanged, a chunked/SSE reply re-chunked
read by read, TCP_NODELAY). Nothing on that path waits for the shadow.

A POST to ``/v1/chat/completions``, ``/v1/completions`` or llama.cpp's ``/completion``
whose body is a JSON object no larger than ``max_body`` is handed to the session's
``Hooks.on_request``, which may return a :class:`Mirrored` job. The client's v1 reply is
teed into the run's own reply parsers while it streams (so its TTFT is the time of its
first text). Once the client's exchange is over — whole, failed or cancelled, exactly
once whatever ended it — the job goes to the sink: by default a bounded queue here
(``ShadowPool``, ``put_nowait``: a full queue drops the copy, counted; nothing ever
waits for room), in ``shadow-burnin mirror`` the pipe to its shadow process
(``app.mirror_split``). A copy never runs alongside its own client's exchange.
``shadow_concurrency`` workers send queued copies to v2 (``SideClient``: the run's
client, its per-request timeout and error codes) — and, when the session forces a greedy
comparison, a second, shadow-only copy to v1 — then hand the finished job to
``Hooks.on_done``.

Faults: v1 unreachable before its headers → 502 (504 on a timeout: ``v1_timeout``
seconds without a byte from v1) with a JSON error body, as from any reverse proxy; v1
failing mid-body → the client connection is cut (never a short body that looks
complete). A kept-alive connection v1 had closed is retried once on a fresh one when no
byte of a reply came. A client that leaves closes its connection to v1; its job is
marked ``cancelled`` and its shadow copy still runs. ``close`` stops accepting, lets
in-flight client requests finish (within the grace period), drains the queue within it
and drops (counts) what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
from multidict import CIMultiDict, CIMultiDictProxy

from shadow_burnin.core.records import SideReply
from shadow_burnin.errors import ConfigError
from shadow_burnin.io.http.client import Endpoint, RequestSpec, SideClient
from shadow_burnin.io.http.reply_error import ReplyError
from shadow_burnin.io.proxy.relay import Exchange, RelayServer

API_PATHS = {"/v1/chat/completions": "chat", "/v1/completions": "completions",
             "/completion": "native"}
_READABLE = ("identity", "", "gzip", "x-gzip", "deflate")  # reply encodings the tee reads


@dataclass(eq=False)  # identity: a job is one request
class Mirrored:
    """One request chosen for comparison and what each side said about it."""

    ts: str
    path: str
    api: str
    stream: bool
    body: dict[str, Any]
    shadow_body: bytes  # what v2 gets (the client's bytes unless changed)
    greedy: bool = False  # the shadow body is a greedy copy, also sent to v1 (shadow-only)
    reason: str | None = None  # why the request is not byte-comparable (None: it is)
    v1: SideReply | None = None  # the client's reply from v1
    v2: SideReply | None = None
    v1_greedy: SideReply | None = None  # v1's reply to the greedy copy
    cancelled: bool = False  # the client left before v1's reply was complete
    meta: dict[str, Any] = field(default_factory=dict)


class Hooks(Protocol):
    """What the session decides: which requests to mirror, and what to do with a pair.
    Both are called on the event loop and must not block."""

    def on_request(self, path: str, api: str, body: dict[str, Any], raw: bytes,
                   ts: str) -> Mirrored | None: ...

    def on_done(self, job: Mirrored) -> None: ...


@dataclass
class ProxyStats:
    """Counters since start (all requests, and what became of their shadow copies)."""

    requests: int = 0  # client requests received
    passthrough: int = 0  # other paths and methods: proxied, never compared
    not_json: int = 0  # a completion path whose body is not a JSON object
    too_large: int = 0  # over max_body: proxied as is, never compared
    mirrored: int = 0  # copies queued for the shadow
    skipped: int = 0  # comparable paths the session chose not to mirror (sampling)
    dropped_full: int = 0  # the queue was full: copy dropped
    dropped_shutdown: int = 0  # still queued or in flight when the grace period ended
    shadow_done: int = 0  # shadow copies answered (or failed) by v2
    completed: int = 0  # jobs handed to on_done
    v1_failed: int = 0  # client requests the primary could not answer (502/504/cut)
    client_cancelled: int = 0
    undecodable: int = 0  # v1 replied in an encoding the mirror cannot read: not compared

    def to_json(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class ProxyConfig:
    v1: Endpoint  # v1.api_key: only for forced-greedy copies (clients bring their own)
    v2: Endpoint
    max_queue: int = 1000
    shadow_concurrency: int = 4
    shadow_timeout: float = 120.0
    v1_timeout: float = 600.0
    max_body: int = 4 * 1024 * 1024
    max_reply_bytes: int = 4 * 1024 * 1024
    grace: float = 30.0


class _Feed:
    """The reading side of an aiohttp ``StreamReader`` over bytes fed as they arrive,
    so the run's own reply parsers can read a reply the proxy is passing through."""

    def __init__(self, compressed: bool = False) -> None:
        self._chunks: deque[bytes] = deque()
        self._eof = False
        self._waiter: asyncio.Future[None] | None = None
        # gzip or zlib-wrapped deflate (the client gets the compressed bytes untouched)
        self._inflate = zlib.decompressobj(wbits=47) if compressed else None

    def feed(self, data: bytes) -> None:
        if self._inflate is not None:
            try:
                data = self._inflate.decompress(data)
            except zlib.error:
                self._inflate, data = None, b"\xff"  # undecodable: the parser says so
        if data:
            self._chunks.append(data)
            self._wake()

    def close(self) -> None:
        if self._inflate is not None:
            with contextlib.suppress(zlib.error):
                self._chunks.append(self._inflate.flush())
        self._eof = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def readany(self) -> bytes:
        while not self._chunks and not self._eof:
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        return self._chunks.popleft() if self._chunks else b""

    async def iter_any(self) -> AsyncIterator[bytes]:
        while chunk := await self.readany():
            yield chunk

    def iter_chunked(self, n: int) -> AsyncIterator[bytes]:
        return self.iter_any()

    def at_eof(self) -> bool:
        return self._eof and not self._chunks


@dataclass
class _Upstream:
    """What the reply parsers read of a response (``aiohttp.ClientResponse``'s shape)."""

    status: int
    headers: CIMultiDictProxy[str]
    content: _Feed
    content_length: int | None = None


async def parse_reply(parser: SideClient, upstream: _Upstream, start: float) -> SideReply:
    """The run's parsers over a reply the proxy is passing through; never raises."""
    reply = SideReply(text=None, status=upstream.status)
    try:
        await parser.read_reply(upstream, reply, start)
    except ReplyError as exc:
        reply.error = exc.message()
    if reply.latency_ms is None or reply.error is not None:
        reply.latency_ms = round((time.perf_counter() - start) * 1000.0, 3)
    if reply.error is not None and not reply.truncated and \
            not reply.error.startswith("stream-incomplete"):
        reply.text = None
    return reply


class MirrorProxy:
    """The relay server (clients and v1), the decisions on each request, and the shadow
    workers (unless a ``sink`` takes the jobs elsewhere)."""

    def __init__(self, cfg: ProxyConfig, hooks: Hooks,
                 sink: Callable[[Mirrored], None] | None = None) -> None:
        """``sink`` takes each job once its client's exchange is over; by default a
        :class:`ShadowPool` in this process, which hands finished jobs to
        ``hooks.on_done``. (``shadow-burnin mirror`` passes one that sends them to its
        shadow process.)"""
        self.cfg = cfg
        self.hooks = hooks
        self.stats = ProxyStats()
        self.pool = None if sink is not None else ShadowPool(cfg, hooks.on_done, self.stats)
        self._sink = sink or self.pool.offer  # type: ignore[union-attr]
        self._v1_base = cfg.v1.url.rstrip("/")
        self._server: RelayServer | None = None
        self._reading: dict[Exchange, tuple[asyncio.Task[SideReply], _Feed]] = {}
        self._parsers: dict[tuple[str, bool], SideClient] = {}
        self._parsing: set[asyncio.Task[SideReply]] = set()
        self.port = 0

    # -- lifecycle ------------------------------------------------------------------
    async def start(self, host: str, port: int) -> None:
        self._server = RelayServer(self, self._v1_base, insecure=self.cfg.v1.insecure,
                                   max_body=self.cfg.max_body, v1_timeout=self.cfg.v1_timeout)
        try:
            await self._server.start(host, port)
        except OSError as exc:
            await self.close()
            raise ConfigError(None, f"mirror.listen: cannot listen on {host}:{port} "
                              f"({exc.strerror or type(exc).__name__})") from None
        self.port = self._server.port
        if self.pool is not None:
            self.pool.start()

    async def close(self) -> None:
        """Stop accepting; finish client requests; drain the queue within the grace
        period, then drop (count) what is left; close every connection."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cfg.grace
        if self._server is not None:
            await self._server.close(self.cfg.grace)  # in-flight exchanges finish first
            self._server = None
        # the last replies' parsers hand their jobs on (their callbacks run first)
        await asyncio.gather(*self._parsing, return_exceptions=True)
        if self.pool is not None:
            await self.pool.close(deadline)

    # -- the client's path (``io.proxy.relay`` calls these) ----------------------------
    def request(self, ex: Exchange) -> None:
        """A whole request (or the head of one too large to compare): mirror it?"""
        stats = self.stats
        stats.requests += 1
        api = None
        if ex.method == b"POST":
            path = ex.path.split(b"?", 1)[0].decode("latin-1")
            api = API_PATHS.get(path)
        if api is None:
            stats.passthrough += 1
            return
        if ex.oversize:
            stats.too_large += 1
            return
        try:
            obj = orjson.loads(ex.body)
        except orjson.JSONDecodeError:
            obj = None
        if not isinstance(obj, dict):
            stats.not_json += 1
            return
        ex.job = self.hooks.on_request(path, api, obj, bytes(ex.body), _utc_now())
        if ex.job is None:
            stats.skipped += 1

    def headers(self, ex: Exchange, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        """v1's head: start reading its reply for the job as it passes (a task)."""
        job = ex.job
        if job is None:
            return
        view_headers = CIMultiDictProxy(CIMultiDict(
            (k.decode("latin-1"), v.decode("latin-1")) for k, v in headers))
        encoding = view_headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in _READABLE:
            self.stats.undecodable += 1  # e.g. br, zstd: v1's reply is not read
            ex.job = None
            return
        feed = _Feed(compressed=encoding in ("gzip", "x-gzip", "deflate"))
        length = view_headers.get("Content-Length")
        view = _Upstream(status, view_headers, feed,
                         int(length) if length and length.isdigit() else None)
        parse = asyncio.ensure_future(parse_reply(self._parser(job.api, job.stream), view,
                                                  ex.start))

        def tee(chunk: bytes) -> None:
            if not parse.done():  # (a parser that gave up, e.g. too-large: no more)
                feed.feed(chunk)

        ex.feed = tee
        self._reading[ex] = (parse, feed)

    def finished(self, ex: Exchange) -> None:
        """The exchange is over (exactly once): count it; the job's v1 side is known."""
        if ex.failed:
            self.stats.v1_failed += 1
        if ex.cancelled and not ex.delivered:
            self.stats.client_cancelled += 1
        job = ex.job
        if job is None:
            return
        if ex.cancelled and not ex.delivered:
            job.cancelled = True
        parse, feed = self._reading.pop(ex, (None, None))
        self._v1_outcome(job, parse, feed, ex.start, ex.error, ex.status)

    def _v1_outcome(self, job: Mirrored, parse: asyncio.Task[SideReply] | None,
                    feed: _Feed | None, start: float, error: str | None,
                    status: int | None) -> None:
        """Hand v1's reply to the job once its parser has read what passed through (a
        callback: it does not depend on the client's handler surviving)."""
        if parse is None or feed is None:
            self._v1_done(job, SideReply(
                text=None, status=status, error=error or "bad-shape: no reply",
                latency_ms=round((time.perf_counter() - start) * 1000.0, 3)))
            return
        feed.close()

        def parsed(task: asyncio.Task[SideReply]) -> None:
            if task.cancelled() or task.exception() is not None:
                reply = SideReply(text=None, status=status, error="bad-shape: unreadable")
            else:
                reply = task.result()
            if error is not None:
                reply.error = error
                if reply.text:
                    reply.truncated = True
            self._v1_done(job, reply)

        parse.add_done_callback(parsed)
        self._parsing.add(parse)
        parse.add_done_callback(self._parsing.discard)

    def _parser(self, api: str, stream: bool) -> SideClient:
        key = (api, stream)
        parser = self._parsers.get(key)
        if parser is None:
            spec = RequestSpec(api=api, stream=stream,  # type: ignore[arg-type]
                               max_reply_bytes=self.cfg.max_reply_bytes)
            parser = self._parsers[key] = SideClient(Endpoint(self._v1_base), spec)
        return parser

    def _v1_done(self, job: Mirrored, reply: SideReply) -> None:
        """The client's exchange is over: now the copy goes to the shadow (so a copy
        never runs alongside its own client's exchange)."""
        job.v1 = reply
        self._sink(job)


class ShadowPool:
    """The shadow's bounded queue and its workers: each job is sent to v2 (and, forced
    greedy, a second time to v1), then handed to ``on_done``. ``offer`` never waits: a
    full queue drops the job (counted in ``stats``)."""

    def __init__(self, cfg: ProxyConfig, on_done: Callable[[Mirrored], None],
                 stats: ProxyStats | None = None) -> None:
        self.cfg = cfg
        self.on_done = on_done
        self.stats = stats if stats is not None else ProxyStats()
        self.queue: asyncio.Queue[Mirrored] = asyncio.Queue(cfg.max_queue)
        self._workers: list[asyncio.Task[None]] = []
        self._clients: dict[tuple[str, str, bool], SideClient] = {}
        self._busy: set[Mirrored] = set()  # jobs a worker is sending right now
        self._closed = False
        self._bytes = 0  # request and reply bytes of the queued jobs

    def start(self) -> None:
        self._workers = [asyncio.create_task(self._worker())
                         for _ in range(self.cfg.shadow_concurrency)]

    def offer(self, job: Mirrored) -> None:
        if self._closed:
            self.stats.dropped_shutdown += 1
            return
        size = _size(job)
        if self._bytes + size > QUEUE_BYTES:
            self.stats.dropped_full += 1  # a few huge requests must not fill the memory
            return
        try:
            self.queue.put_nowait(job)
        except asyncio.QueueFull:
            self.stats.dropped_full += 1
            return
        self.stats.mirrored += 1
        self._bytes += size

    async def close(self, deadline: float) -> None:
        """Drain the queue until ``deadline`` (loop time), then drop (count) what is
        left or in flight; close the connections."""
        left = max(0.0, deadline - asyncio.get_running_loop().time())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.queue.join(), left)
        self._closed = True
        self.stats.dropped_shutdown += len(self._busy)  # cut off in flight, no round
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        while not self.queue.empty():
            self.queue.get_nowait()
            self.queue.task_done()
            self.stats.dropped_shutdown += 1
        for client in self._clients.values():
            await client.__aexit__(None, None, None)
        self._clients.clear()

    async def _client(self, side: str, api: str, stream: bool) -> SideClient:
        key = (side, api, stream)
        client = self._clients.get(key)
        if client is None:
            endpoint = self.cfg.v1 if side == "v1" else self.cfg.v2
            spec = RequestSpec(api=api, stream=stream,  # type: ignore[arg-type]
                               timeout_s=self.cfg.shadow_timeout,
                               max_reply_bytes=self.cfg.max_reply_bytes)
            client = SideClient(endpoint, spec)
            await client.__aenter__()
            self._clients[key] = client
        return client

    async def _worker(self) -> None:
        while True:
            job = await self.queue.get()
            self._bytes -= _size(job)
            self._busy.add(job)
            try:
                v2 = await self._client("v2", job.api, job.stream)
                if job.greedy:
                    v1 = await self._client("v1", job.api, job.stream)
                    job.v2, job.v1_greedy = await asyncio.gather(
                        v2.post(job.shadow_body), v1.post(job.shadow_body))
                else:
                    job.v2 = await v2.post(job.shadow_body)
            except Exception as exc:  # a bug must not stop the shadow, nor hide the round
                job.v2 = SideReply(text=None, error=f"bad-shape: {type(exc).__name__}")
            finally:
                self._busy.discard(job)
                self.queue.task_done()
            self.stats.shadow_done += 1
            self.stats.completed += 1
            self.on_done(job)


QUEUE_BYTES = 256 * 1024 * 1024  # request and reply bytes the shadow queue holds, at most


def _size(job: Mirrored) -> int:
    text = job.v1.text if job.v1 is not None else None
    return len(job.shadow_body) + (len(text) if text else 0)


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"

