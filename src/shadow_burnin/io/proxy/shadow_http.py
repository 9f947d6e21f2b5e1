"""The shadow's HTTP/1.1 client: a POST, its reply collected as bytes (``RawReply``).

The same raw asyncio protocol and httptools parser as the client path
(``io.proxy.relay``), without aiohttp: connections kept alive in a pool (the warmest
first), a request written in one call, the reply's body kept read by read
(``replies.Collector``, capped) and read afterwards by ``replies.parse`` with the run's
dialects. Transport errors get ``SideClient``'s codes: ``connection-refused`` (any
failure to connect), ``tls``, ``timeout`` (no complete reply within the per-request
timeout), ``connection-reset`` (the connection ended early, or the server sent bad
HTTP). One retry, as ``SideClient`` does it: a kept-alive connection the server had
already closed fails before a byte of a reply; the request is sent again once on a fresh
connection (the timed attempt is the one that counts).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from typing import cast

import httptools

from shadow_burnin.io.proxy.relay import Target, nodelay, warmest
from shadow_burnin.io.proxy.replies import WANTED, Collector, RawReply


class _Conn(asyncio.Protocol):
    """One kept-alive connection; one exchange at a time."""

    def __init__(self, pool: ShadowHTTP) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.raw: RawReply | None = None
        self.feed: Collector | None = None
        self.done: asyncio.Future[None] | None = None
        self.received = 0
        self.keep_alive = False
        self._framed = False
        self._interim = False

    def begin(self, raw: RawReply, cap: int) -> asyncio.Future[None]:
        self.raw = raw
        self.feed = Collector(raw, cap)
        self.received = 0
        self._interim = False
        self.parser = httptools.HttpResponseParser(self)
        self.done = asyncio.get_running_loop().create_future()
        return self.done

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    # -- asyncio ------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        nodelay(self.transport)
        self.pool.every.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.every.discard(self)
        raw = self.raw
        if raw is None or self.done is None or self.done.done():
            return
        if raw.status is not None and not self._framed:  # a body that ends at close
            self._finish(keep_alive=False)
            return
        raw.error = "connection-reset: " + (type(exc).__name__ if exc else "closed early")
        self._finish(keep_alive=False)

    def data_received(self, data: bytes) -> None:
        if self.raw is None:  # nothing asked: the server is confused
            self.abort()
            return
        self.received += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass
        except httptools.HttpParserError as exc:
            self.raw.error = f"connection-reset: bad HTTP from the server ({str(exc)[:60]})"
            self._finish(keep_alive=False)
            self.abort()

    # -- httptools callbacks ------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        low = name.lower()
        if low in WANTED and self.raw is not None:
            self.raw.headers[low] = value
        if low in (b"content-length", b"transfer-encoding"):
            self._framed = True

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            self._interim = True
            return
        assert self.raw is not None
        self.raw.status = status
        self.keep_alive = self.parser.should_keep_alive()
        if status in (204, 304):
            self._framed = True

    def on_body(self, body: bytes) -> None:
        if self.feed is not None:
            self.feed(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            self._framed = False
            if self.raw is not None:
                self.raw.headers.clear()
            return
        self._finish(keep_alive=self.keep_alive)

    def _finish(self, *, keep_alive: bool) -> None:
        raw, done = self.raw, self.done
        self.raw = self.feed = None
        self.done = None
        if raw is not None:
            raw.end = time.perf_counter()
        if keep_alive and not self.closed:
            self.pool.idle.append(self)
        elif not self.closed:
            self.abort()
        if done is not None and not done.done():
            done.set_result(None)


class ShadowHTTP:
    """POSTs to one server (``base``: scheme, host, port and path prefix)."""

    def __init__(self, base: str, *, api_key: str | None, insecure: bool,
                 timeout: float, max_reply_bytes: int) -> None:
        t = Target.of(base, insecure=insecure)
        self.tls, self.host, self.port, self.prefix = t.tls, t.host, t.port, t.prefix
        head = b"Host: " + t.host_header + b"\r\nContent-Type: application/json\r\n" \
            b"Accept: */*\r\nUser-Agent: shadow-burnin-mirror\r\n"
        if api_key:
            head += b"Authorization: Bearer " + api_key.encode("latin-1") + b"\r\n"
        self._head = head
        self.timeout = timeout
        self.cap = max_reply_bytes
        self._ssl = t.ssl
        self.idle: deque[_Conn] = deque()
        self.every: set[_Conn] = set()

    def __repr__(self) -> str:  # never the key
        return f"ShadowHTTP({self.host}:{self.port})"

    async def post(self, path: str, body: bytes, *, stream: bool) -> RawReply:
        """Send ``body`` to ``path``; the reply as it came (never raises for a server's
        or the network's trouble: ``RawReply.error``)."""
        got = await self._attempt(path, body, stream)
        if got.retry:
            got = await self._attempt(path, body, stream, fresh=True)
        return got.reply

    async def _attempt(self, path: str, body: bytes, stream: bool, *,
                       fresh: bool = False) -> _Attempt:
        raw = RawReply(start=time.perf_counter(), stream=stream)
        conn: _Conn | None = None
        reused = False
        try:
            async with asyncio.timeout(self.timeout):
                conn = None if fresh else self._take()
                reused = conn is not None
                if conn is None:
                    conn = await self._connect()
                done = conn.begin(raw, self.cap)
                assert conn.transport is not None
                conn.transport.writelines((
                    b"POST ", self.prefix, path.encode("latin-1"), b" HTTP/1.1\r\n",
                    self._head, b"Content-Length: %d\r\n\r\n" % len(body), body))
                await done
        except TimeoutError:
            raw.error = f"timeout: no complete reply within {self.timeout:g} s"
            raw.end = time.perf_counter()
            if conn is not None:
                conn.raw = conn.feed = None
                conn.abort()
            return _Attempt(raw)
        except ssl.SSLCertVerificationError as exc:
            raw.error = f"tls: certificate verify failed: {exc.verify_message}"
        except ssl.SSLError as exc:
            raw.error = f"tls: {exc.reason or type(exc).__name__}"
        except OSError as exc:
            raw.error = f"connection-refused: {exc.strerror or type(exc).__name__}"
        if raw.end is None:
            raw.end = time.perf_counter()
        retry = (reused and raw.status is None and conn is not None and conn.received == 0
                 and raw.error is not None and raw.error.startswith("connection-reset"))
        return _Attempt(raw, retry)

    def _take(self) -> _Conn | None:
        conn: _Conn | None = warmest(self.idle)
        return conn

    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        _t, conn = await loop.create_connection(
            lambda: _Conn(self), self.host, self.port, ssl=self._ssl,
            server_hostname=self.host if self._ssl is not None else None)
        return conn

    def close(self) -> None:
        for conn in list(self.every):
            conn.abort()
        self.idle.clear()


class _Attempt:
    __slots__ = ("reply", "retry")

    def __init__(self, reply: RawReply, retry: bool = False) -> None:
        self.reply = reply
        self.retry = retry
