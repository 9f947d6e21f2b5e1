"""The shadow's raw HTTP client (``io.proxy.shadow_http``) against a scripted socket
server whose every byte is chosen by the test."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable

import pytest

from shadow_burnin.io.proxy.replies import parse
from shadow_burnin.io.proxy.shadow_http import ShadowHTTP

OK = (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%b")
BODY = b'{"choices": [{"text": "Paris.", "finish_reason": "stop"}]}'


class Wire:
    """A server that reads one request head and body, then does ``answer(n, writer)``."""

    def __init__(self, answer: Callable[[int, asyncio.StreamWriter], object]) -> None:
        self.answer = answer
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/prefix"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                self.requests.append(head + await reader.readexactly(length))
                result = self.answer(len(self.requests), writer)
                if asyncio.iscoroutine(result):
                    await result
                await writer.drain()
                if writer.is_closing():
                    return


@contextlib.asynccontextmanager
async def wire(answer: Callable[[int, asyncio.StreamWriter], object]) -> AsyncIterator[Wire]:
    w = Wire(answer)
    w.server = await asyncio.start_server(w._serve, "127.0.0.1", 0)
    try:
        yield w
    finally:
        w.server.close()


def client(url: str, **kw: object) -> ShadowHTTP:
    options: dict[str, object] = {"api_key": None, "insecure": False, "timeout": 5.0,
                                  "max_reply_bytes": 1 << 20, **kw}
    return ShadowHTTP(url, **options)  # type: ignore[arg-type]


async def test_requests_share_a_kept_alive_connection_and_carry_the_shadow_key() -> None:
    async with wire(lambda n, w: w.write(OK % (len(BODY), BODY))) as server:
        http = client(server.url, api_key="sk-shadow-key-123456")
        replies = [await http.post("/v1/completions", b'{"p": 1}', stream=False)
                   for _ in range(3)]
        http.close()
    assert [parse(r, "completions", False, 1 << 20).text for r in replies] == ["Paris."] * 3
    assert server.connections == 1
    head = server.requests[0]
    assert head.startswith(b"POST /prefix/v1/completions HTTP/1.1\r\n")
    assert b"\r\nAuthorization: Bearer sk-shadow-key-123456\r\n" in head
    assert head.endswith(b'\r\n\r\n{"p": 1}')
    assert "sk-shadow" not in repr(http)


async def test_a_kept_alive_connection_the_server_closed_is_replaced_once() -> None:
    def answer(n: int, w: asyncio.StreamWriter) -> None:
        w.write(OK % (len(BODY), BODY))  # keep-alive announced, then closed anyway
        w.close()

    async with wire(answer) as server:
        http = client(server.url)
        replies = [await http.post("/v1/completions", b"{}", stream=False) for _ in range(3)]
        http.close()
    assert [r.error for r in replies] == [None] * 3 and server.connections == 3


async def test_a_silent_server_times_out_and_the_next_request_gets_a_new_connection() -> None:
    async def answer(n: int, w: asyncio.StreamWriter) -> None:
        if n == 1:
            await asyncio.Event().wait()  # never answers (cancelled at the end)
        w.write(OK % (len(BODY), BODY))

    async with wire(answer) as server:
        http = client(server.url, timeout=0.3)
        first = await http.post("/v1/completions", b"{}", stream=False)
        second = await http.post("/v1/completions", b"{}", stream=False)
        http.close()
    assert first.error == "timeout: no complete reply within 0.3 s" and first.status is None
    assert second.error is None and server.connections == 2


@pytest.mark.parametrize(("reply", "code"), [
    (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n" + BODY,
     None),  # a body that ends at close is whole
    (b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n" + BODY, "connection-reset"),
    (b"NOT HTTP AT ALL\r\n\r\n", "connection-reset: bad HTTP"),
    (b"HTTP/1.1 100 Continue\r\n\r\n" + OK % (len(BODY), BODY), None),
])
async def test_how_a_reply_ends(reply: bytes, code: str | None) -> None:
    def answer(n: int, w: asyncio.StreamWriter) -> None:
        w.write(reply)
        if b"Content-Length: 500" in reply or b"Connection: close" in reply:
            w.close()

    async with wire(answer) as server:
        http = client(server.url)
        got = await http.post("/v1/completions", b"{}", stream=False)
        http.close()
    read = parse(got, "completions", False, 1 << 20)
    if code is None:
        assert read.error is None and read.text == "Paris."
    else:
        assert read.error is not None and read.error.startswith(code), read.error


async def test_a_refused_connection() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: refused
        http = client(f"http://127.0.0.1:{port}")
        got = await http.post("/v1/completions", b"{}", stream=False)
    assert got.error is not None and got.error.startswith("connection-refused")
    assert parse(got, "completions", False, 1 << 20).error == got.error


async def test_a_stream_keeps_each_read_and_its_time() -> None:
    events = [b'data: {"choices": [{"text": "Pa"}]}\n\n',
              b'data: {"choices": [{"text": "ris", "finish_reason": "stop"}]}\n\n',
              b"data: [DONE]\n\n"]
    gate = asyncio.Event()

    async def answer(n: int, w: asyncio.StreamWriter) -> None:
        w.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n")
        for e in events:
            w.write(b"%x\r\n%b\r\n" % (len(e), e))
            await w.drain()
            if e is events[0]:
                await gate.wait()  # the second event only once the first one is in
        w.write(b"0\r\n\r\n")

    async with wire(answer) as server:
        http = client(server.url)
        task = asyncio.ensure_future(http.post("/v1/completions", b"{}", stream=True))
        for _ in range(500):  # polled, bounded: the first event reached the client
            conn = next(iter(http.every), None)
            if conn is not None and conn.raw is not None and conn.raw.chunks:
                break
            await asyncio.sleep(0.01)
        gate.set()
        got = await task
        http.close()
    assert len(got.chunks) >= 2 and len(got.times) == len(got.chunks)
    read = parse(got, "completions", True, 1 << 20)
    assert read.text == "Paris" and read.error is None
    assert read.ttft_ms is not None and read.latency_ms is not None
    assert read.ttft_ms < read.latency_ms  # the first text came in an earlier read
