"""The mirror's reverse proxy: clients are served by v1, a copy of each request goes to v2.

The client's path is ``io.proxy.relay``: raw asyncio protocols parsed by httptools, a
kept-alive pool of connections to v1, v1's reply relayed as it arrives (status and
headers but for hop-by-hop ones, body bytes unchanged, a chunked/SSE reply re-chunked
read by read, TCP_NODELAY). Nothing on that path waits for the shadow.

A POST to ``/v1/chat/completions``, ``/v1/completions`` or llama.cpp's ``/completion``
whose body is a JSON object no larger than ``max_body`` is handed to the session's
``Hooks.on_request``, which may return a :class:`Mirrored` job. While v1's reply passes
to the client, its body bytes are only kept (``replies.Collector``: a list append per
read, with the read's time for a stream, capped at ``max_reply_bytes``); nothing is
parsed on the client's path. Once the client's exchange is over — whole, failed or
cancelled, exactly once whatever ended it — the job goes to the sink: by default a
bounded queue here (``ShadowPool``, ``put_nowait``: a full queue drops the copy, counted;
nothing ever waits for room), in ``shadow-burnin mirror`` the pipe to its shadow process
(``app.mirror_split``). A copy never runs alongside its own client's exchange.
``shadow_concurrency`` workers read v1's reply (``replies.parse``: the run's dialects and
error codes; a stream's TTFT is the arrival of the read that brought its first text),
send the copy to v2 (``shadow_http.ShadowHTTP``: the same raw protocol and parser as the
client's path, the per-request timeout, the client's error codes) — and, when the
session forces a greedy comparison, a second, shadow-only copy to v1 — then hand the
finished job to ``Hooks.on_done``.

Faults: v1 unreachable before its headers → 502 (504 on a timeout: ``v1_timeout``
seconds without a byte from v1) with a JSON error body, as from any reverse proxy; v1
failing mid-body → the client connection is cut (never a short body that looks
complete). A kept-alive connection v1 had closed is retried once on a fresh one when no
byte of a reply came. A client that leaves closes its connection to v1; its job is
marked ``cancelled`` and its shadow copy still runs (unless the stream's end marker had
already gone to it: a client that closes right after ``[DONE]``, before the chunked
body's last bytes, has had the whole reply, and the round is compared). ``close`` stops
accepting, lets in-flight client requests finish (within the grace period), drains the
queue within it and drops (counts) what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import msgspec
import orjson
from msgspec.structs import fields

from shadow_burnin.core.records import SideReply
from shadow_burnin.errors import ConfigError
from shadow_burnin.io.http.client import Endpoint
from shadow_burnin.io.http.dialects import dialect_for
from shadow_burnin.io.proxy.relay import Exchange, RelayServer
from shadow_burnin.io.proxy.replies import WANTED, Collector, RawReply, parse, scrub, secrets_of
from shadow_burnin.io.proxy.shadow_http import ShadowHTTP

API_PATHS = {"/v1/chat/completions": "chat", "/v1/completions": "completions",
             "/completion": "native"}
_READABLE = (b"identity", b"", b"gzip", b"x-gzip", b"deflate")  # reply encodings read


class Mirrored(msgspec.Struct, eq=False):  # identity: a job is one request
    """One request chosen for comparison and what each side said about it."""

    ts: str
    path: str
    api: str
    stream: bool
    body: dict[str, Any]
    shadow_body: bytes  # what v2 gets (the client's bytes unless changed)
    greedy: bool = False  # the shadow body is a greedy copy, also sent to v1 (shadow-only)
    reason: str | None = None  # why the request is not byte-comparable (None: it is)
    v1: SideReply | None = None  # the client's reply from v1 (read from ``v1_raw``)
    v1_raw: RawReply | None = None  # v1's reply as it passed (read by the shadow)
    v2: SideReply | None = None
    v1_greedy: SideReply | None = None  # v1's reply to the greedy copy
    cancelled: bool = False  # the client left before v1's reply was complete
    meta: dict[str, Any] = msgspec.field(default_factory=dict)
    raw: bytes | None = None  # the client's body as it came (``body`` parsed), if kept

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        """Pickled as one tuple (the shadow process gets jobs in frames of many): the
        client's bytes rather than their parse when kept (the same bytes as
        ``shadow_body``, unless the copy was changed: then pickled once)."""
        return (_rebuild, (self.ts, self.path, self.api, self.stream,
                           self.body if self.raw is None else self.raw, self.shadow_body,
                           self.greedy, self.reason, self.v1, self.v2, self.v1_greedy,
                           self.v1_raw, self.cancelled, self.meta, self.raw is not None))


def _rebuild(ts: str, path: str, api: str, stream: bool, body: Any, shadow_body: bytes,
             greedy: bool, reason: str | None, v1: SideReply | None, v2: SideReply | None,
             v1_greedy: SideReply | None, v1_raw: RawReply | None, cancelled: bool,
             meta: dict[str, Any], raw: bool) -> Mirrored:
    return Mirrored(ts=ts, path=path, api=api, stream=stream,
                    body=orjson.loads(body) if raw else body, shadow_body=shadow_body,
                    greedy=greedy, reason=reason, v1=v1, v1_raw=v1_raw, v2=v2,
                    v1_greedy=v1_greedy, cancelled=cancelled, meta=meta,
                    raw=body if raw else None)


class Hooks(Protocol):
    """What the session decides: which requests to mirror, and what to do with a pair.
    Both are called on the event loop and must not block."""

    def on_request(self, path: str, api: str, body: dict[str, Any], raw: bytes,
                   ts: str) -> Mirrored | None: ...

    def on_done(self, job: Mirrored) -> None: ...


class ProxyStats(msgspec.Struct):
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


class ProxyConfig(msgspec.Struct, frozen=True):
    v1: Endpoint  # v1.api_key: only for forced-greedy copies (clients bring their own)
    v2: Endpoint
    max_queue: int = 1000
    shadow_concurrency: int = 4
    shadow_timeout: float = 120.0
    v1_timeout: float = 600.0
    max_body: int = 4 * 1024 * 1024
    max_reply_bytes: int = 4 * 1024 * 1024
    grace: float = 30.0


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
        """v1's head: keep its reply's bytes for the job as they pass (read later, by the
        shadow)."""
        job = ex.job
        if job is None:
            return
        raw = RawReply(start=ex.start, stream=job.stream, status=status)
        for name, value in headers:
            low = name.lower()
            if low in WANTED:
                raw.headers[low] = value
        if raw.headers.get(b"content-encoding", b"identity").strip().lower() not in _READABLE:
            self.stats.undecodable += 1  # e.g. br, zstd: v1's reply is not read
            ex.job = None
            return
        ex.feed = Collector(raw, self.cfg.max_reply_bytes)
        job.v1_raw = raw

    def finished(self, ex: Exchange) -> None:
        """The exchange is over (exactly once): count it; the job's v1 side is known and
        the job goes to the shadow (so a copy never runs alongside its own client's
        exchange)."""
        if ex.failed:
            self.stats.v1_failed += 1
        if ex.cancelled and not ex.delivered:
            self.stats.client_cancelled += 1
        job = ex.job
        if job is None:
            return
        if ex.cancelled and not ex.delivered:
            job.cancelled = True
        raw = job.v1_raw
        if raw is None:  # no head from v1
            raw = job.v1_raw = RawReply(start=ex.start, status=ex.status,
                                        error=ex.error or "bad-shape: no reply")
        else:
            raw.error = ex.error
        raw.end = time.perf_counter()
        self._sink(job)


class ShadowPool:
    """The shadow's bounded queue and its workers: each job is sent to v2 (and, forced
    greedy, a second time to v1), both replies are read (``replies.parse``), then the
    job goes to ``on_done``. ``offer`` never waits: a full queue drops the job (counted
    in ``stats``)."""

    def __init__(self, cfg: ProxyConfig, on_done: Callable[[Mirrored], None],
                 stats: ProxyStats | None = None) -> None:
        self.cfg = cfg
        self.on_done = on_done
        self.stats = stats if stats is not None else ProxyStats()
        self.queue: asyncio.Queue[Mirrored] = asyncio.Queue(cfg.max_queue)
        self._workers: list[asyncio.Task[None]] = []
        self._http: dict[str, ShadowHTTP] = {}
        self._secrets = {"v1": secrets_of(cfg.v1.api_key), "v2": secrets_of(cfg.v2.api_key)}
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
        for http in self._http.values():
            http.close()
        self._http.clear()

    def _side(self, side: str) -> ShadowHTTP:
        http = self._http.get(side)
        if http is None:
            endpoint = self.cfg.v1 if side == "v1" else self.cfg.v2
            http = self._http[side] = ShadowHTTP(
                endpoint.url, api_key=endpoint.api_key, insecure=endpoint.insecure,
                timeout=self.cfg.shadow_timeout, max_reply_bytes=self.cfg.max_reply_bytes)
        return http

    def _read(self, raw: RawReply, job: Mirrored, side: str) -> SideReply:
        return scrub(parse(raw, job.api, job.stream, self.cfg.max_reply_bytes),
                     self._secrets[side])

    async def _worker(self) -> None:
        while True:
            job = await self.queue.get()
            self._bytes -= _size(job)
            self._busy.add(job)
            try:
                if job.v1 is None and job.v1_raw is not None:
                    job.v1 = parse(job.v1_raw, job.api, job.stream, self.cfg.max_reply_bytes)
                    if job.cancelled and job.stream and job.v1.error is None:
                        # the stream's end marker had gone to the client before it left
                        # (it closed before the chunked body's last bytes): a whole reply
                        job.cancelled = False
                job.v1_raw = None
                path = dialect_for(job.api).path
                v2 = self._side("v2").post(path, job.shadow_body, stream=job.stream)
                if job.greedy:
                    v1 = self._side("v1").post(path, job.shadow_body, stream=job.stream)
                    raw2, raw1 = await asyncio.gather(v2, v1)
                    job.v1_greedy = self._read(raw1, job, "v1")
                else:
                    raw2 = await v2
                job.v2 = self._read(raw2, job, "v2")
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
    raw = job.v1_raw
    return len(job.shadow_body) + (min(raw.size, 1 << 30) if raw is not None else 0)


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"
