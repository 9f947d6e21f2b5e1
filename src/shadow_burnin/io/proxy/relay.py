"""The mirror's client path: HTTP/1.1 on raw asyncio protocols, parsed by httptools.

One ``_Client`` protocol per client connection and one ``_Upstream`` protocol per
connection to v1 (kept alive in a pool). Both parse with httptools (llhttp, the C parser
Node.js uses): no request or response objects, no header dictionaries but for the
requests the mirror compares, no task per chunk. v1's reply is relayed from the
upstream's ``data_received`` straight to the client's transport, everything parsed out of
one read going out in one write: the status and headers as v1 sent them but for the
hop-by-hop ones, the body bytes unchanged (a chunked reply re-chunked as it arrives, so an
SSE event goes out as soon as it comes in). Nothing on this path waits for the shadow.

What the proxy (``io.proxy.mirror.MirrorProxy``) gets from here: ``Exchange`` callbacks —
``request`` (the whole request, once its body is in, unless it is too large), and
``finished`` (exactly once per request, whatever ended it).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections import deque
from typing import Any, Protocol, cast
from urllib.parse import urlsplit

import httptools
import msgspec
import orjson

# hop-by-hop (RFC 9110 §7.6.1) and framing headers: the proxy sets its own
HOP = frozenset((b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization",
                 b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade",
                 b"host", b"content-length", b"expect"))
_PENDING_LIMIT = 256 * 1024  # bytes a client may send ahead (pipelining) before we pause it
_NO_BODY = (204, 304)


class Relay(Protocol):
    """What the proxy decides on each request (``MirrorProxy`` has this shape)."""

    cfg: Any

    def request(self, ex: Exchange) -> None:
        """Headers and (unless ``ex.streaming``) the whole body are in: decide whether to
        mirror it (set ``ex.job``). A whole request has already gone to v1 (nothing for
        the shadow delays it); v1's reply can only come after this returns."""

    def headers(self, ex: Exchange, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        """v1's status and headers arrived and went to the client, with the body bytes of
        the same read: set ``ex.feed`` to read the body (it is then given those bytes,
        stamped with their read's arrival)."""

    def finished(self, ex: Exchange) -> None:
        """The exchange is over (``ex.error`` None: v1's reply reached the client whole)."""


class Exchange(msgspec.Struct, eq=False):
    """One client request and what became of it."""

    method: bytes
    path: bytes
    headers: list[tuple[bytes, bytes]]
    keep_alive: bool
    start: float
    body: bytearray
    oversize: bool = False  # over max_body: forwarded, never compared
    streaming: bool = False  # oversize, and forwarded as it arrives
    chunked_in: bool = False  # the client sent its body chunked
    job: Any = None  # the proxy's: what it needs back in ``finished``
    feed: Any = None  # receives v1's body bytes (decoded framing) while they pass
    status: int | None = None
    error: str | None = "client-cancelled"  # v1's outcome for the job, until known
    delivered: bool = False
    cancelled: bool = False
    failed: bool = False  # v1 could not answer (502/504, or cut mid-body)


def _error_body(message: str) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": "bad_gateway",
                                   "code": "mirror_upstream_error"}})


def nodelay(transport: asyncio.BaseTransport) -> None:
    """TCP_NODELAY on the transport's socket (small writes leave at once)."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def warmest(idle: deque[Any]) -> Any:
    """The most recently kept-alive connection in ``idle`` that is still open (LIFO), or
    None; closed ones met on the way are dropped."""
    while idle:
        conn = idle.pop()
        if not conn.closed:
            return conn
    return None


class Target(msgspec.Struct, frozen=True):
    """Where a server is, as a raw HTTP/1.1 client needs it (from its base URL)."""

    tls: bool
    host: str
    port: int
    prefix: bytes  # the URL's path, prepended to each request's
    host_header: bytes  # never the userinfo
    ssl: ssl.SSLContext | None

    @classmethod
    def of(cls, url: str, *, insecure: bool) -> Target:
        parts = urlsplit(url)
        tls = parts.scheme == "https"
        hostport = parts.netloc.rsplit("@", 1)[-1]
        try:
            host_header = hostport.encode("ascii")
        except UnicodeEncodeError:
            host_header = hostport.encode("idna")
        context: ssl.SSLContext | None = None
        if tls:
            context = ssl.create_default_context()
            if insecure:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        return cls(tls, parts.hostname or "127.0.0.1", parts.port or (443 if tls else 80),
                   parts.path.rstrip("/").encode(), host_header, context)


class Upstreams:
    """Kept-alive connections to v1 (LIFO: the warmest first)."""

    def __init__(self, url: str, *, insecure: bool, connect_timeout: float = 30.0) -> None:
        t = Target.of(url, insecure=insecure)
        self.tls, self.host, self.port, self.prefix = t.tls, t.host, t.port, t.prefix
        self.host_header = t.host_header
        self.connect_timeout = connect_timeout
        self._ssl = t.ssl
        self.idle: deque[_Upstream] = deque()
        self.every: set[_Upstream] = set()

    def take(self) -> _Upstream | None:
        """A kept-alive connection, if one is idle."""
        up: _Upstream | None = warmest(self.idle)
        return up

    async def connect(self) -> _Upstream:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.connect_timeout):
            _t, up = await loop.create_connection(
                lambda: _Upstream(self), self.host, self.port, ssl=self._ssl,
                server_hostname=self.host if self._ssl is not None else None)
        return up

    def put(self, up: _Upstream) -> None:
        if not up.closed:
            self.idle.append(up)

    def close(self) -> None:
        for up in list(self.every):
            up.abort()
        self.idle.clear()


class _Upstream(asyncio.Protocol):
    """One connection to v1; relays one exchange at a time to its client."""

    def __init__(self, pool: Upstreams) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.client: _Client | None = None
        self.closed = False
        self.received = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._reason = b""
        self.reused = False
        self._out: list[bytes] = []
        # the proxy's hooks for the read being parsed, run once its bytes went out
        self._head_hook: tuple[Exchange, int, list[tuple[bytes, bytes]]] | None = None
        self._bodies: list[bytes] = []
        self._chunked = False  # to the client
        self._framed = False  # v1's reply has a length or chunks (else: ends at close)
        self._head_done = False
        self._complete = False
        self._interim = False  # a 1xx reply before the real one: not relayed
        self._keep_alive = False

    # -- the exchange -----------------------------------------------------------------
    def begin(self, client: _Client) -> None:
        self.client = client
        self.received = 0
        self._headers = []
        self._reason = b""
        self._head_done = self._complete = self._interim = False
        self._out = []
        self._head_hook, self._bodies = None, []
        self.parser = httptools.HttpResponseParser(self)

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    # -- asyncio ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # (uvloop's is not a subclass)
        nodelay(self.transport)
        self.pool.every.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.every.discard(self)
        client, self.client = self.client, None
        if client is not None and not self._complete:
            if self._head_done and not self._framed:  # a body that ends at close
                self._finish_body()
                out, self._out = self._out, []
                client.send(out)
                self._hooks(client, time.perf_counter())
                client.upstream_done(self, reusable=False)
            else:
                client.upstream_failed(self, "connection-reset: "
                                       + (type(exc).__name__ if exc else "closed early"))

    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is None:  # nothing asked: v1 is confused; drop the connection
            self.abort()
            return
        self.received += len(data)
        arrived = time.perf_counter()
        client.last = client.loop_time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass
        except httptools.HttpParserError as exc:
            self.client = None
            self.abort()
            self._hooks(client, arrived)
            client.upstream_failed(self, f"connection-reset: bad HTTP from the primary "
                                   f"({str(exc)[:60]})")
            return
        if self._out:
            out, self._out = self._out, []
            client.send(out)
        self._hooks(client, arrived)
        if self._complete and self.client is client:
            self.client = None
            client.upstream_done(self, reusable=self._keep_alive)

    def _hooks(self, client: _Client, arrived: float) -> None:
        """What the proxy does with a read of v1's reply, after its bytes went to the
        client: the head (``Relay.headers``), then the body bytes (``ex.feed``)."""
        head, self._head_hook = self._head_hook, None
        if head is not None:
            client.proxy.headers(*head)
        if self._bodies:
            bodies, self._bodies = self._bodies, []
            feed = client.ex.feed if client.ex is not None else None
            if feed is not None:
                for body in bodies:
                    feed(body, arrived)

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    # -- httptools callbacks ------------------------------------------------------------
    def on_status(self, reason: bytes) -> None:
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        client = self.client
        assert client is not None
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # (v1 never got our Expect; 103 hints are dropped)
            self._interim = True
            return
        self._keep_alive = self.parser.should_keep_alive()  # (reset once the reply is in)
        ex = client.ex
        assert ex is not None
        length = chunked = None
        head = [b"HTTP/1.1 %d %s\r\n" % (status, self._reason)]
        for name, value in self._headers:
            low = name.lower()
            if low in HOP:
                if low == b"content-length":
                    length = value
                elif low == b"transfer-encoding":
                    chunked = b"chunked" in value.lower()
                continue
            head.append(name + b": " + value + b"\r\n")
        self._head_hook = (ex, status, self._headers)  # run once this read went out
        no_body = ex.method == b"HEAD" or status in _NO_BODY
        self._framed = bool(chunked) or length is not None or no_body
        self._chunked = False
        if length is not None and not chunked:
            head.append(b"Content-Length: " + length + b"\r\n")
        elif not no_body:
            head.append(b"Transfer-Encoding: chunked\r\n")
            self._chunked = True
        if not ex.keep_alive or client.closing or client.server.closing:
            head.append(b"Connection: close\r\n")
        head.append(b"\r\n")
        self._out.append(b"".join(head))
        ex.status = status
        self._head_done = True
        if ex.method == b"HEAD":  # llhttp would wait for a body: the reply ends here
            self._complete = True  # (and the connection is not reused)

    def on_body(self, body: bytes) -> None:
        client = self.client
        if client is None or client.ex is None:
            return
        if self._chunked:
            self._out.append(b"%x\r\n%b\r\n" % (len(body), body))
        else:
            self._out.append(body)
        if client.ex.feed is not None or self._head_hook is not None:
            self._bodies.append(body)  # for the feed, once this read went out

    def on_message_complete(self) -> None:
        if self._interim:  # the real reply follows on the same connection
            self._interim = False
            self._headers = []
            self._reason = b""
            return
        self._finish_body()

    def _finish_body(self) -> None:
        if self._chunked:
            self._out.append(b"0\r\n\r\n")
            self._chunked = False
        self._complete = True


class _Client(asyncio.Protocol):
    """One client connection: parse a request, relay it to v1, relay the reply back."""

    def __init__(self, proxy: Relay, server: RelayServer) -> None:
        self.proxy = proxy
        self.server = server
        self.loop_time = asyncio.get_running_loop().time
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.ex: Exchange | None = None  # with v1 (or being streamed to it)
        self._cur: Exchange | None = None  # being parsed
        self._queued: deque[Exchange] = deque()  # pipelined, complete, waiting their turn
        self.up: _Upstream | None = None
        self.busy = False  # the request is complete and with v1
        self.closing = False
        self.last = 0.0  # loop time of v1's last bytes
        self._pending = bytearray()  # pipelined bytes, read while busy
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._body_buffer: list[bytes] | None = None  # streaming body before v1 is connected

    # -- asyncio ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # (uvloop's is not a subclass)
        nodelay(self.transport)
        self.server.clients.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.clients.discard(self)
        self.closing = True
        self._queued.clear()  # (never sent: nobody is left to answer)
        ex = self.ex
        if ex is not None:
            self._end(ex, error="client-cancelled", cancelled=True)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        if self.busy:
            self._pending += data
            if len(self._pending) > _PENDING_LIMIT and self.transport is not None:
                self.transport.pause_reading()
            return
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._bad(b"400 Bad Request", b"upgrades are not proxied by the mirror")
        except httptools.HttpParserError:
            self._bad(b"400 Bad Request", b"malformed HTTP request")

    def pause_writing(self) -> None:  # the client reads slowly: slow v1 down with it
        if self.up is not None:
            self.up.pause_reading()

    def resume_writing(self) -> None:
        if self.up is not None:
            self.up.resume_reading()

    # -- httptools callbacks ------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        p = self.parser
        ex = Exchange(method=p.get_method(), path=self._url, headers=self._headers,
                      keep_alive=p.should_keep_alive(), start=time.perf_counter(),
                      body=bytearray())
        self._cur = ex
        idle = self.ex is None  # (else: pipelined behind a request still with v1)
        length = None
        for name, value in self._headers:
            low = name.lower()
            if low == b"content-length":
                with contextlib.suppress(ValueError):
                    length = int(value)
            elif low == b"transfer-encoding":
                ex.chunked_in = True
            elif low == b"expect" and value.lower() == b"100-continue" and idle and \
                    self.transport is not None:
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if length is not None and length > self.server.max_body:
            self._too_large(ex)

    def on_body(self, body: bytes) -> None:
        ex = self._cur
        if ex is None:
            return
        if ex.streaming:
            self._send_body(body)
            return
        ex.body += body
        if not ex.oversize and len(ex.body) > self.server.max_body:
            self._too_large(ex)

    def on_message_complete(self) -> None:
        ex, self._cur = self._cur, None
        if ex is None:
            return
        if ex.streaming:
            self.busy = True
            self._send_body(None)
        elif self.ex is None:
            self._start(ex)
        else:
            self._queued.append(ex)

    # -- the exchange -------------------------------------------------------------------
    def _too_large(self, ex: Exchange) -> None:
        """Too large to compare: forwarded now, its body as it arrives (or, pipelined
        behind another request, kept whole until its turn)."""
        ex.oversize = True
        if self.ex is None:
            ex.streaming = True
            self._body_buffer = [bytes(ex.body)] if ex.body else []
            ex.body = bytearray()
            self.ex = ex
            self.proxy.request(ex)
            self._begin(ex)

    def _start(self, ex: Exchange) -> None:
        self.ex = ex
        self.busy = True
        self._begin(ex)  # v1 first: the shadow's decision waits for the next line
        self.proxy.request(ex)

    def _send_body(self, chunk: bytes | None) -> None:
        """A piece of a streaming body (None: its end) to v1, or kept until connected."""
        ex = self.ex
        if ex is None:
            return
        if self._body_buffer is not None:
            self._body_buffer.append(b"" if chunk is None else chunk)
            if chunk is None:
                self._body_buffer.append(b"\x00end")
            return
        up = self.up
        if up is None or up.transport is None or up.closed:
            return
        if chunk is None:
            if ex.chunked_in:
                up.transport.write(b"0\r\n\r\n")
        elif ex.chunked_in:
            up.transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
        else:
            up.transport.write(chunk)

    def _request_head(self, ex: Exchange, pool: Upstreams) -> list[bytes]:
        out = [ex.method, b" ", pool.prefix, ex.path, b" HTTP/1.1\r\nHost: ",
               pool.host_header, b"\r\n"]
        for name, value in ex.headers:
            if name.lower() not in HOP:
                out += (name, b": ", value, b"\r\n")
        if ex.streaming:
            if ex.chunked_in:
                out.append(b"Transfer-Encoding: chunked\r\n")
            else:
                length = next(v for n, v in ex.headers if n.lower() == b"content-length")
                out += (b"Content-Length: ", length, b"\r\n")
        elif ex.body or ex.chunked_in or any(n.lower() == b"content-length"
                                             for n, _v in ex.headers):
            out.append(b"Content-Length: %d\r\n" % len(ex.body))
        out.append(b"\r\n")
        return out

    def _begin(self, ex: Exchange) -> None:
        """Send the request to v1: at once on a kept-alive connection (no task, no loop
        turn), else once a new connection is up."""
        self.server.exchange_started()
        up = self.server.upstreams.take()
        if up is not None:
            self._send_request(ex, up, reused=True)
        else:
            self.server.spawn(self._exchange(ex))

    async def _exchange(self, ex: Exchange) -> None:
        """Connect to v1, then send; the reply comes back through
        ``_Upstream.data_received``."""
        pool = self.server.upstreams
        try:
            up = await pool.connect()
        except TimeoutError:
            self._fail(ex, 504, "timeout: the primary did not answer in time")
            return
        except OSError as exc:
            self._fail(ex, 502, "connection-refused: " + (exc.strerror or type(exc).__name__))
            return
        if self.ex is not ex or self.transport is None:  # the client left meanwhile
            pool.put(up)
            return
        self._send_request(ex, up, reused=False)

    def _send_request(self, ex: Exchange, up: _Upstream, *, reused: bool) -> None:
        self.up = up
        up.begin(self)
        up.reused = reused
        self.last = self.loop_time()
        head = self._request_head(ex, self.server.upstreams)
        assert up.transport is not None
        if ex.streaming:
            up.transport.writelines(head)
            buffered, self._body_buffer = self._body_buffer or [], None
            for piece in buffered:
                if piece == b"\x00end":
                    self._send_body(None)
                elif piece:
                    self._send_body(piece)
        else:
            head.append(bytes(ex.body))
            up.transport.writelines(head)
        self._arm()

    def _arm(self) -> None:
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.server.v1_timeout,
                                                                self._check_idle)

    def _check_idle(self) -> None:
        self._timer = None
        ex = self.ex
        if ex is None or self.up is None:
            return
        left = self.last + self.server.v1_timeout - self.loop_time()
        if left > 0:
            self._timer = asyncio.get_running_loop().call_later(left, self._check_idle)
            return
        up, self.up = self.up, None
        up.client = None
        up.abort()
        self._upstream_error(ex, 504, "timeout: the primary did not answer in time")

    def send(self, out: list[bytes]) -> None:
        """Bytes of v1's reply, parsed from one read: out in one write."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.writelines(out)

    def upstream_done(self, up: _Upstream, *, reusable: bool) -> None:
        ex = self.ex
        self.up = None
        if reusable and not up.closed and ex is not None and ex.method != b"HEAD":
            self.server.upstreams.put(up)
        else:
            up.abort()
        if ex is None:
            return
        if self.transport is None:
            self._end(ex, error="client-cancelled", cancelled=True)
            return
        self._end(ex, error=None)

    def upstream_failed(self, up: _Upstream, error: str) -> None:
        ex = self.ex
        if ex is None or self.up is not up:
            return
        self.up = None
        if up.reused and up.received == 0 and not ex.streaming and ex.status is None:
            # a kept-alive connection v1 had closed: no byte of a reply came and the
            # request was whole; send it again, once, on a fresh connection
            self.server.spawn(self._exchange(ex))  # (a fresh one: never retried again)
            return
        self._upstream_error(ex, 502, error)

    def _upstream_error(self, ex: Exchange, status: int, error: str) -> None:
        if ex.status is None:  # nothing went to the client yet: a clear error reply
            self._fail(ex, status, error)
            return
        if self.transport is not None:  # mid-body: cut, never a short body
            self.transport.abort()
        self._end(ex, error=error, failed=True)

    def _fail(self, ex: Exchange, status: int, error: str) -> None:
        """v1 could not answer: a JSON error reply, as from any reverse proxy."""
        if self.transport is None:
            self._end(ex, error=error, failed=True, cancelled=True)
            return
        body = _error_body(f"shadow-burnin mirror: the primary could not answer ({error})")
        reason = b"Bad Gateway" if status == 502 else b"Gateway Timeout"
        self.transport.write(b"HTTP/1.1 %d %s\r\nContent-Type: application/json; "
                             b"charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n"
                             b"\r\n%b" % (status, reason, len(body), body))
        self._end(ex, error=error, failed=True, delivered=True)

    def _end(self, ex: Exchange, *, error: str | None, failed: bool = False,
             cancelled: bool = False, delivered: bool | None = None) -> None:
        """The exchange is over: exactly once."""
        if self.ex is not ex:
            return
        self.ex = None
        self.busy = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        up, self.up = self.up, None
        if up is not None:
            up.client = None
            up.abort()
        ex.error = error
        ex.cancelled = cancelled
        ex.delivered = (error is None) if delivered is None else delivered
        ex.failed = failed
        self.proxy.finished(ex)
        self.server.exchange_over()
        transport = self.transport
        if transport is None:
            return
        if not ex.keep_alive or self.closing or self.server.closing or \
                ex.status is None:
            transport.close()
            return
        if self._queued:
            self._start(self._queued.popleft())
            return
        if self._pending:
            data, self._pending = bytes(self._pending), bytearray()
            transport.resume_reading()
            self._feed(data)

    def _bad(self, status: bytes, message: bytes) -> None:
        if self.transport is not None:
            self.transport.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: text/plain\r\n"
                                 b"Content-Length: %d\r\nConnection: close\r\n\r\n%b" % (
                                     len(message), message))
            self.transport.close()
        self.transport = None


class RelayServer:
    """The listening socket and the client connections."""

    def __init__(self, proxy: Relay, v1_url: str, *, insecure: bool, max_body: int,
                 v1_timeout: float) -> None:
        self.proxy = proxy
        self.upstreams = Upstreams(v1_url, insecure=insecure)
        self.max_body = max_body
        self.v1_timeout = v1_timeout
        self.clients: set[_Client] = set()
        self.closing = False
        self.active = 0  # exchanges started and not over
        self._idle = asyncio.Event()
        self._idle.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Client(self.proxy, self), host,
                                                port, backlog=1024, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    def exchange_started(self) -> None:
        self.active += 1  # (over at ``_Client._end``)
        self._idle.clear()

    def spawn(self, coro: Any) -> None:
        """Run a coroutine of an exchange (cancelled at close if still running)."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def exchange_over(self) -> None:
        self.active = max(0, self.active - 1)
        if self.active == 0:
            self._idle.set()

    async def close(self, grace: float) -> None:
        """Stop accepting; close idle connections; let exchanges in flight finish within
        ``grace`` seconds, then cut them."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        for client in list(self.clients):
            if client.ex is None and client.transport is not None:
                client.transport.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self._idle.wait()
        for client in list(self.clients):
            if client.transport is not None:
                client.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.upstreams.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await self._server.wait_closed()
            self._server = None

