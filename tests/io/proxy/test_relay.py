"""The mirror's client path on raw protocols (``io.proxy.relay``): HTTP/1.1 details a
reverse proxy must get right, each under asyncio's loop and uvloop's (the CLI's).

v1 here is a small asyncio server written for each case (exact bytes, a connection
closed at a chosen moment); clients are aiohttp or a raw socket where the exact bytes
on the wire matter (pipelining, ``Expect: 100-continue``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import aiohttp
import orjson
import pytest
import uvloop
from aiohttp import web

from shadow_burnin.io.http.client import Endpoint
from shadow_burnin.io.proxy.mirror import MirrorProxy, ProxyConfig
from tests.io.proxy.test_mirror import Recorder

LOOPS = {"asyncio": None, "uvloop": uvloop.new_event_loop}


def run(loop: str, main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        runner.run(asyncio.wait_for(main(), 60))  # a guard against a hang, not a figure


def completion(text: str) -> bytes:
    return orjson.dumps({"id": "c", "object": "text_completion", "choices": [
        {"index": 0, "text": text, "finish_reason": "stop"}]})


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes] | None:
    """(head, body) of the next request on a connection; None at its end."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head, await reader.readexactly(length)


@contextlib.asynccontextmanager
async def raw_server(handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                      Awaitable[None]]) -> AsyncIterator[str]:
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()


@contextlib.asynccontextmanager
async def proxy(v1: str, **options: Any) -> AsyncIterator[tuple[str, MirrorProxy, Recorder]]:
    hooks = Recorder()
    p = MirrorProxy(ProxyConfig(v1=Endpoint(v1), v2=Endpoint("http://127.0.0.1:9"),
                                **options), hooks)
    await p.start("127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{p.port}", p, hooks
    finally:
        await p.close()


def reply_bytes(text: str, extra: bytes = b"") -> bytes:
    body = completion(text)
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"%b\r\n%b" % (len(body), extra, body))


BODY = {"prompt": "x", "temperature": 0}


@pytest.mark.parametrize("loop", LOOPS)
def test_a_kept_alive_connection_v1_dropped_is_retried_once(loop: str) -> None:
    """v1 answers the first request on each connection and drops the connection when a
    second one comes: the mirror resends that request, once, on a fresh connection. A
    fresh connection dropped before a reply is a 502, not a loop."""
    connections = []

    async def v1(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        if (got := await read_request(reader)) is not None:
            writer.write(reply_bytes(orjson.loads(got[1])["prompt"]))
            await writer.drain()
            await read_request(reader)  # a second request: dropped unanswered
        writer.close()

    async def drop_all(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.close()

    async def main() -> None:
        async with raw_server(v1) as url1, proxy(url1) as (url, p, hooks), \
                aiohttp.ClientSession() as http:
            texts = []
            for i in range(3):
                async with http.post(url + "/v1/completions",
                                     json=dict(BODY, prompt=f"q{i}")) as resp:
                    assert resp.status == 200
                    texts.append((await resp.json())["choices"][0]["text"])
            await hooks.wait_done(3)
            # each reply is its own request's, though v1 dropped two of them once
            assert texts == ["q0", "q1", "q2"]
            assert len(connections) == 3 and p.stats.v1_failed == 0
            assert sorted(j.v1.text or "" for j in hooks.done if j.v1) == texts
        async with raw_server(drop_all) as url1, proxy(url1) as (url, p, hooks), \
                aiohttp.ClientSession() as http:
            async with http.post(url + "/v1/completions", json=BODY) as resp:
                assert resp.status == 502
                assert "connection-reset" in (await resp.json())["error"]["message"]
            [job] = await hooks.wait_done(1)
            assert job.v1 is not None and job.v1.error is not None
            assert job.v1.error.startswith("connection-reset")
            assert p.stats.v1_failed == 1

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_pipelined_requests_and_expect_100_continue(loop: str) -> None:
    async def v1(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (got := await read_request(reader)) is not None:
            writer.write(reply_bytes(orjson.loads(got[1])["prompt"]))
            await writer.drain()
        writer.close()

    def post(prompt: str, *extra: bytes) -> tuple[bytes, bytes]:
        body = orjson.dumps({"prompt": prompt, "temperature": 0})
        return (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                b"\r\nContent-Length: %d\r\n%b\r\n" % (len(body), b"".join(extra)), body)

    async def read_reply(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        return head, await reader.readexactly(length)

    async def main() -> None:
        async with raw_server(v1) as url1, proxy(url1) as (url, _p, hooks):
            host, port = url.removeprefix("http://").split(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            # three requests in one write: three replies, in order
            writer.write(b"".join(b"".join(post(f"p{i}")) for i in range(3)))
            for i in range(3):
                head, body = await read_reply(reader)
                assert head.startswith(b"HTTP/1.1 200 OK\r\n")
                assert orjson.loads(body)["choices"][0]["text"] == f"p{i}"
            # Expect: 100-continue: the interim reply first, then the body is sent
            head, body = post("later", b"Expect: 100-continue\r\n")
            writer.write(head)
            assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(body)
            _head, got = await read_reply(reader)
            assert orjson.loads(got)["choices"][0]["text"] == "later"
            writer.close()
            done = await hooks.wait_done(4)
            assert sorted(j.v1.text for j in done if j.v1 and j.v1.text) == [
                "later", "p0", "p1", "p2"]

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_head_get_and_a_large_chunked_body_pass_through(loop: str) -> None:
    async def models(request: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "m"}]}, headers={"X-Kept": "yes"})

    async def digest(request: web.Request) -> web.Response:
        data = await request.read()
        return web.json_response({"chunked": request.headers.get("Transfer-Encoding"),
                                  "n": len(data), "sha": hashlib.sha256(data).hexdigest()})

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/v1/models", models)
        app.router.add_post("/v1/completions", digest)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        v1 = f"http://127.0.0.1:{runner.addresses[0][1]}"
        big = orjson.dumps({"prompt": "y" * 300_000, "temperature": 0})

        async def pieces() -> AsyncIterator[bytes]:
            for i in range(0, len(big), 7000):
                yield big[i:i + 7000]

        try:
            async with proxy(v1, max_body=100_000) as (url, p, hooks), \
                    aiohttp.ClientSession() as http:
                async with http.head(url + "/v1/models") as resp:
                    assert resp.status == 200 and resp.headers["X-Kept"] == "yes"
                    assert await resp.read() == b""
                async with http.get(url + "/v1/models") as resp:
                    assert (await resp.json())["data"] == [{"id": "m"}]
                async with http.post(url + "/v1/completions", data=pieces()) as resp:
                    got = await resp.json()
                assert got == {"chunked": "chunked", "n": len(big),
                               "sha": hashlib.sha256(big).hexdigest()}
                async with http.post(url + "/v1/completions", data=big) as resp:
                    got = await resp.json()
                assert got["chunked"] is None and got["n"] == len(big)
                assert (p.stats.passthrough, p.stats.too_large) == (2, 2)
                assert hooks.requests == []
        finally:
            await runner.cleanup()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_silent_primary_gives_504_or_a_cut_connection(loop: str) -> None:
    """v1 says nothing for longer than ``v1_timeout``: before its head, the client gets a
    504; in the middle of its body, the client's connection is cut (never a short body
    that looks whole)."""
    hold = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        got = await read_request(reader)
        assert got is not None
        if orjson.loads(got[1])["prompt"] == "half":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100\r\n\r\n{\"choices\": [")
            await writer.drain()
        await hold.wait()
        writer.close()

    async def main() -> None:
        async with raw_server(silent) as url1, \
                proxy(url1, v1_timeout=0.3) as (url, p, hooks), \
                aiohttp.ClientSession() as http:
            async with http.post(url + "/v1/completions", json=BODY) as resp:
                assert resp.status == 504
                assert "timeout" in (await resp.json())["error"]["message"]
            async with http.post(url + "/v1/completions", json=dict(BODY, prompt="half")
                                 ) as resp:
                assert resp.status == 200
                with pytest.raises(aiohttp.ClientPayloadError):
                    await resp.read()
            jobs = await hooks.wait_done(2)
            assert all(j.v1 is not None and j.v1.error is not None and
                       j.v1.error.startswith("timeout") for j in jobs)
            assert p.stats.v1_failed == 2
            hold.set()

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_an_early_hint_and_a_reply_that_ends_at_close(loop: str) -> None:
    """v1 sends a 103 first (not relayed: the client asked for nothing of the kind), then
    a reply with neither a length nor chunks, ended by closing the connection: the
    client gets the whole body, framed, and the reply is compared."""
    async def v1(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </x>; rel=preload\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Connection: close\r\n\r\n" + completion("until the end"))
        await writer.drain()
        writer.close()

    async def main() -> None:
        async with raw_server(v1) as url1, proxy(url1) as (url, p, hooks), \
                aiohttp.ClientSession() as http:
            for _ in range(2):
                async with http.post(url + "/v1/completions", json=BODY) as resp:
                    assert resp.status == 200 and "Link" not in resp.headers
                    assert (await resp.json())["choices"][0]["text"] == "until the end"
            jobs = await hooks.wait_done(2)
            assert [j.v1.text for j in jobs if j.v1] == ["until the end"] * 2
            assert p.stats.v1_failed == 0

    run(loop, main)


def _read_message(conn: socket.socket, buf: bytes) -> tuple[bytes, bytes, bytes]:
    """(head, body, what follows) of the next HTTP/1.1 message with a Content-Length."""
    while b"\r\n\r\n" not in buf:
        buf += conn.recv(65536)
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(rest) < length:
        rest += conn.recv(65536)
    return head, rest[:length], rest[length:]


@pytest.mark.parametrize("loop", LOOPS)
def test_the_shadow_s_work_waits_for_the_bytes_it_would_delay(loop: str) -> None:
    """A compared request goes to v1 before the proxy decides on its copy, and each read
    of v1's reply goes to the client before the proxy reads the head and body for the
    copy: nothing done for the shadow delays a byte the client waits for. v1 and the
    client are threads with raw sockets; the proxy's hooks (on the event loop) wait for
    the event the bytes in flight would set — on the old order they were still unsent."""
    at_v1, at_client = threading.Event(), threading.Event()
    seen: dict[str, list[bool]] = {"request": [], "headers": []}
    listener = socket.create_server(("127.0.0.1", 0))

    def v1() -> None:
        conn, _ = listener.accept()
        with conn:
            buf = b""
            for _ in range(2):
                _head, body, buf = _read_message(conn, buf)
                at_v1.set()
                conn.sendall(reply_bytes(orjson.loads(body)["prompt"]))

    class Watching(MirrorProxy):
        def request(self, ex: Any) -> None:
            if self.stats.requests:  # the first one waits for a connection to v1
                seen["request"].append(at_v1.wait(10))
            super().request(ex)

        def headers(self, ex: Any, status: int, headers: list[tuple[bytes, bytes]]) -> None:
            seen["headers"].append(at_client.wait(10))
            super().headers(ex, status, headers)

    def client(port: int, texts: list[str]) -> None:
        with socket.create_connection(("127.0.0.1", port)) as conn:
            buf = b""
            for i in range(2):
                at_v1.clear()
                at_client.clear()
                body = orjson.dumps(dict(BODY, prompt=f"q{i}"))
                conn.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                             b"application/json\r\nContent-Length: %d\r\n\r\n%b"
                             % (len(body), body))
                while b"\r\n\r\n" not in buf:
                    buf += conn.recv(65536)
                at_client.set()
                _head, reply, buf = _read_message(conn, buf)
                texts.append(orjson.loads(reply)["choices"][0]["text"])

    async def main() -> None:
        hooks = Recorder()
        port = listener.getsockname()[1]
        p = Watching(ProxyConfig(v1=Endpoint(f"http://127.0.0.1:{port}"),
                                 v2=Endpoint("http://127.0.0.1:9")), hooks)
        await p.start("127.0.0.1", 0)
        texts: list[str] = []
        threads = [threading.Thread(target=v1),
                   threading.Thread(target=client, args=(p.port, texts))]
        try:
            for thread in threads:
                thread.start()
            done = await hooks.wait_done(2)
            await asyncio.to_thread(threads[1].join, 10)
        finally:
            await p.close()
            listener.close()
        assert texts == ["q0", "q1"]
        assert seen == {"request": [True], "headers": [True, True]}
        assert sorted(j.v1.text or "" for j in done if j.v1) == ["q0", "q1"]

    run(loop, main)
