"""The mirror's proxy: clients get v1's reply untouched, the shadow never touches them.

Real client: the official ``openai`` package. Servers: the scripted OpenAI-compatible
server (twins started alike answer alike, ids included), and small aiohttp handlers
where a test needs to hold a reply in the middle.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from aiohttp import web

from shadow_burnin.io.http.client import Endpoint
from shadow_burnin.io.proxy.mirror import Mirrored, MirrorProxy, ProxyConfig
from tests.servers.scripted import ScriptedServer

Start = Callable[..., Awaitable[ScriptedServer]]


class Recorder:
    """Hooks that mirror every comparable request and keep what comes back."""

    def __init__(self) -> None:
        self.done: list[Mirrored] = []
        self.requests: list[tuple[str, str, dict[str, Any]]] = []
        self._changed = asyncio.Event()

    def on_request(self, path: str, api: str, body: dict[str, Any], raw: bytes,
                   ts: str) -> Mirrored | None:
        self.requests.append((path, api, body))
        return Mirrored(ts=ts, path=path, api=api, stream=body.get("stream") is True,
                        body=body, shadow_body=raw)

    def on_done(self, job: Mirrored) -> None:
        self.done.append(job)
        self._changed.set()

    async def wait_done(self, n: int) -> list[Mirrored]:
        async with asyncio.timeout(60):  # a guard against a hang, not a figure
            while len(self.done) < n:
                self._changed.clear()
                await self._changed.wait()
        return self.done


@contextlib.asynccontextmanager
async def running_proxy(v1: str, v2: str, hooks: Any | None = None, *,
                        v2_key: str | None = None, **options: Any
                        ) -> AsyncIterator[tuple[str, MirrorProxy, Any]]:
    hooks = hooks or Recorder()
    proxy = MirrorProxy(ProxyConfig(v1=Endpoint(v1), v2=Endpoint(v2, api_key=v2_key),
                                    **options), hooks)
    await proxy.start("127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{proxy.port}", proxy, hooks
    finally:
        await proxy.close()


def _chat(client: openai.AsyncOpenAI, stream: bool) -> Any:
    return client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "Say hi ü"}], temperature=0,
        max_tokens=12, stream=stream)


def _completion(client: openai.AsyncOpenAI, stream: bool) -> Any:
    return client.completions.create(model="m", prompt="The capital of France is",
                                     temperature=0, max_tokens=12, stream=stream)


async def _result(call: Any, stream: bool) -> Any:
    got = await call
    if not stream:
        return got.model_dump()
    return [chunk.model_dump() async for chunk in got]


@pytest.mark.parametrize("kind", ["chat", "completions"])
@pytest.mark.parametrize("stream", [False, True])
async def test_openai_client_gets_what_the_primary_gives(scripted_server: Start, kind: str,
                                                         stream: bool) -> None:
    options = {"reply": "Paris, of course.\nAnd ü 日本 🙂", "per_chunk_ms": 1}
    direct_v1 = await scripted_server(**options)
    mirrored_v1 = await scripted_server(**options)  # a twin: same ids, same bytes
    v2 = await scripted_server(reply="something else")
    call = _chat if kind == "chat" else _completion
    async with running_proxy(mirrored_v1.url, v2.url) as (url, _proxy, hooks):
        through = openai.AsyncOpenAI(base_url=url + "/v1", api_key="sk-test", max_retries=0)
        direct = openai.AsyncOpenAI(base_url=direct_v1.url + "/v1", api_key="sk-test",
                                    max_retries=0)
        got = await _result(call(through, stream), stream)
        want = await _result(call(direct, stream), stream)
        assert got == want
        [job] = await hooks.wait_done(1)
    assert mirrored_v1.requests[0].raw == direct_v1.requests[0].raw  # the request too
    assert v2.requests[0].raw == mirrored_v1.requests[0].raw  # the shadow got the same
    assert job.v1 is not None and job.v1.text == "Paris, of course.\nAnd ü 日本 🙂"[
        :len(job.v1.text)] and job.v1.error is None
    assert job.v2 is not None and job.v2.text == "something else"
    if stream:
        assert job.v1.ttft_ms is not None


async def test_raw_bytes_status_and_headers_untouched(scripted_server: Start) -> None:
    a = await scripted_server(fault="http-429")
    b = await scripted_server(fault="http-429")
    v2 = await scripted_server()
    body = b'{"model":"m","messages":[{"role":"user","content":"x"}],"temperature":0}'
    async with running_proxy(b.url, v2.url) as (url, _proxy, hooks), \
            aiohttp.ClientSession() as http:
        replies = []
        for base in (a.url, url):
            async with http.post(base + "/v1/chat/completions", data=body,
                                 headers={"Content-Type": "application/json"}) as resp:
                replies.append((resp.status, resp.headers.get("Retry-After"),
                                resp.headers.get("Content-Type"), await resp.read()))
        [job] = await hooks.wait_done(1)
    assert replies[0] == replies[1]
    assert replies[1][0] == 429 and replies[1][1] == "7"
    assert job.v1 is not None and job.v1.error is not None
    assert job.v1.error.startswith("http-429")


async def test_sse_events_reach_the_client_as_they_arrive(scripted_server: Start) -> None:
    """v1 sends one event, then holds the rest until the client has seen that event
    through the mirror: a buffering proxy would never deliver it (the guard fails)."""
    release = asyncio.Event()

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        first = {"choices": [{"index": 0, "text": "first", "finish_reason": None}]}
        await resp.write(b"data: " + orjson.dumps(first) + b"\n\n")
        await release.wait()
        last = {"choices": [{"index": 0, "text": " last", "finish_reason": "stop"}]}
        await resp.write(b"data: " + orjson.dumps(last) + b"\n\ndata: [DONE]\n\n")
        return resp

    runner = web.ServerRunner(web.Server(handler))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    v1 = f"http://127.0.0.1:{runner.addresses[0][1]}"
    v2 = await scripted_server(reply="first last")
    try:
        async with running_proxy(v1, v2.url) as (url, _proxy, hooks):
            client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="k", max_retries=0)
            stream = await _completion(client, True)
            pieces = []
            async with asyncio.timeout(30):  # guard: a buffered first event never comes
                async for chunk in stream:
                    pieces.append(chunk.choices[0].text)
                    release.set()
            [job] = await hooks.wait_done(1)
    finally:
        await runner.cleanup()
    assert pieces == ["first", " last"]
    assert job.v1 is not None and job.v1.text == "first last"
    assert job.v2 is not None and job.v2.text == "first last"


async def test_authorization_goes_to_v1_untouched_v2_gets_its_own_key(
        scripted_server: Start) -> None:
    v1 = await scripted_server()
    v2 = await scripted_server()
    async with running_proxy(v1.url, v2.url, v2_key="sk-shadow") as (url, _p, hooks):
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="sk-client-secret",
                                    max_retries=0)
        await _chat(client, False)
        await hooks.wait_done(1)
    assert v1.requests[0].headers["Authorization"] == "Bearer sk-client-secret"
    assert v2.requests[0].headers["Authorization"] == "Bearer sk-shadow"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_v1_down_gives_a_clear_502_and_the_shadow_still_runs(
        scripted_server: Start) -> None:
    v2 = await scripted_server(reply="shadow")
    dead = f"http://127.0.0.1:{_free_port()}"
    async with running_proxy(dead, v2.url) as (url, proxy, hooks), \
            aiohttp.ClientSession() as http:
        async with http.post(url + "/v1/completions",
                             json={"prompt": "x", "temperature": 0}) as resp:
            status, body = resp.status, await resp.json()
        [job] = await hooks.wait_done(1)
    assert status == 502
    assert "primary could not answer" in body["error"]["message"]
    assert job.v1 is not None and job.v1.error is not None
    assert job.v1.error.startswith("connection-refused")
    assert job.v2 is not None and job.v2.text == "shadow"
    assert proxy.stats.v1_failed == 1


@pytest.mark.parametrize(("fault", "code"), [
    ("hang", "timeout"), ("http-500", "http-500"), ("invalid-json", "invalid-json"),
    ("reset-mid-body", "connection-reset"), ("refuse", "connection-refused"),
    ("sse-cut", "stream-cut"),
])
async def test_a_failing_shadow_never_touches_the_client(scripted_server: Start,
                                                         fault: str, code: str) -> None:
    v1 = await scripted_server(reply="the answer")
    v2 = await scripted_server()
    await v2.set_fault(fault)
    async with running_proxy(v1.url, v2.url, shadow_timeout=0.5) as (url, _p, hooks):
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="k", max_retries=0)
        texts = []
        for stream in (False, True):
            got = await _result(_completion(client, stream), stream)
            texts.append(got["choices"][0]["text"] if not stream else
                         "".join(c["choices"][0]["text"] for c in got if c["choices"]))
        jobs = await hooks.wait_done(2)
    assert texts == ["the answer", "the answer"]
    for job in jobs:
        assert job.v1 is not None and job.v1.text == "the answer"
        assert job.v2 is not None
        if fault == "sse-cut" and not job.stream:
            continue  # a stream fault: the plain request is answered normally
        assert job.v2.error is not None and job.v2.error.startswith(code), job.v2.error


async def test_bad_or_large_or_other_requests_pass_untouched_and_are_not_compared(
        scripted_server: Start) -> None:
    v1 = await scripted_server()
    v2 = await scripted_server()
    large = orjson.dumps({"prompt": "y" * 5000, "temperature": 0})
    async with running_proxy(v1.url, v2.url, max_body=1000) as (url, proxy, hooks), \
            aiohttp.ClientSession() as http:
        async with http.post(url + "/v1/completions", data=b"{not json") as resp:
            assert resp.status == 400  # the primary decided
        async with http.post(url + "/v1/completions", data=large) as resp:
            assert resp.status == 200
        async with http.get(url + "/v1/models") as resp:
            assert (await resp.json())["data"][0]["id"] == "scripted-model"
        async with http.post(url + "/v1/embeddings?x=1", data=b"{}") as resp:
            assert resp.status == 404
    assert hooks.requests == [] and hooks.done == []
    assert v2.count == 0 and v2.model_requests == 0
    assert v1.requests[-1].raw == large
    s = proxy.stats
    assert (s.not_json, s.too_large, s.passthrough, s.mirrored) == (1, 1, 2, 0)


async def test_client_leaving_mid_stream_cancels_v1_and_the_shadow_completes(
        scripted_server: Start) -> None:
    long_text = "word " * 400
    v1 = await scripted_server(reply=long_text, per_chunk_ms=200, chunk_chars=5)
    v2 = await scripted_server(reply=long_text)
    async with running_proxy(v1.url, v2.url) as (url, proxy, hooks):
        async with aiohttp.ClientSession() as http:
            resp = await http.post(url + "/v1/completions", json={
                "prompt": "x", "temperature": 0, "stream": True})
            await resp.content.readany()  # the first event arrived
            resp.close()  # the client goes away
        [job] = await hooks.wait_done(1)
        for _ in range(200):  # v1's handler sees the cancellation and stops streaming
            if v1.active == 0:
                break
            await asyncio.sleep(0.02)
    assert v1.active == 0
    assert job.cancelled
    assert job.v1 is not None and job.v1.error == "client-cancelled"
    assert job.v2 is not None and job.v2.text == long_text
    assert proxy.stats.client_cancelled == 1


async def test_hung_shadow_1000_requests_all_served_and_drops_counted(
        scripted_server: Start) -> None:
    v1 = await scripted_server(reply="fine", record=False)
    v2 = await scripted_server(record=False)
    await v2.set_fault("hang")
    body = orjson.dumps({"prompt": "p", "temperature": 0, "max_tokens": 4})
    async with running_proxy(v1.url, v2.url, max_queue=20, shadow_concurrency=2,
                             shadow_timeout=3600, grace=0) as (url, proxy, hooks):
        gate = asyncio.Semaphore(50)

        async def one(http: aiohttp.ClientSession) -> tuple[int, str]:
            async with gate, http.post(url + "/v1/completions", data=body) as resp:
                return resp.status, (await resp.json())["choices"][0]["text"]

        async with aiohttp.ClientSession() as http:
            results = await asyncio.gather(*(one(http) for _ in range(1000)))
        stats = proxy.stats
        for _ in range(500):  # each copy is queued (or dropped) once its client is served
            if stats.mirrored + stats.dropped_full == 1000:
                break
            await asyncio.sleep(0.01)
        assert results == [(200, "fine")] * 1000
        assert stats.mirrored + stats.dropped_full == 1000
        assert stats.mirrored <= 20 + 2
        assert stats.dropped_full >= 1000 - 22
        assert hooks.done == []
    # closing with no grace: what was queued or in flight is dropped and counted
    assert stats.dropped_shutdown == stats.mirrored
    assert stats.requests == 1000


async def test_close_finishes_a_client_in_flight_and_drains_the_queue(
        scripted_server: Start) -> None:
    v1 = await scripted_server(reply="slow but sure", delay_ms=300)
    v2 = await scripted_server(reply="slow but sure", delay_ms=300)
    hooks = Recorder()
    proxy = MirrorProxy(ProxyConfig(v1=Endpoint(v1.url), v2=Endpoint(v2.url), grace=30),
                        hooks)
    await proxy.start("127.0.0.1", 0)
    url = f"http://127.0.0.1:{proxy.port}"
    async with aiohttp.ClientSession() as http:
        request = asyncio.ensure_future(http.post(url + "/v1/completions", json={
            "prompt": "x", "temperature": 0}))
        for _ in range(500):  # the request is with v1 when the shutdown starts
            if v1.active:
                break
            await asyncio.sleep(0.01)
        closing = asyncio.ensure_future(proxy.close())
        resp = await request
        assert resp.status == 200
        assert (await resp.json())["choices"][0]["text"] == "slow but sure"
        await closing
    assert len(hooks.done) == 1
    job = hooks.done[0]
    assert job.v1 is not None and job.v2 is not None
    assert job.v1.text == job.v2.text == "slow but sure"
    assert proxy.stats.dropped_shutdown == 0


@pytest.mark.parametrize("encoding", ["gzip", "br"])
async def test_a_compressed_reply_passes_untouched_and_gzip_is_compared(
        scripted_server: Start, encoding: str) -> None:
    plain = orjson.dumps({"id": "c", "object": "text_completion", "choices": [
        {"index": 0, "text": "zipped answer", "finish_reason": "stop"}]})
    packed = gzip.compress(plain) if encoding == "gzip" else b"\x0bnot-really-brotli"

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        await request.read()
        return web.Response(body=packed, headers={"Content-Type": "application/json",
                                                  "Content-Encoding": encoding})

    runner = web.ServerRunner(web.Server(handler))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    v1 = f"http://127.0.0.1:{runner.addresses[0][1]}"
    v2 = await scripted_server(reply="zipped answer")
    try:
        async with running_proxy(v1, v2.url) as (url, proxy, hooks), \
                aiohttp.ClientSession(auto_decompress=False) as http:
            async with http.post(url + "/v1/completions", json={
                    "prompt": "x", "temperature": 0}) as resp:
                assert await resp.read() == packed  # the client's bytes, still compressed
                assert resp.headers["Content-Encoding"] == encoding
            if encoding == "gzip":
                [job] = await hooks.wait_done(1)
                assert job.v1 is not None and job.v1.text == "zipped answer"
                assert job.v2 is not None and job.v2.text == "zipped answer"
            else:
                assert proxy.stats.undecodable == 1 and proxy.stats.mirrored == 0
    finally:
        await runner.cleanup()


async def test_a_huge_reply_reaches_the_client_whole_and_is_not_compared(
        scripted_server: Start) -> None:
    v1 = await scripted_server(huge_bytes=3 * 1024 * 1024)
    await v1.set_fault("huge")
    v2 = await scripted_server()
    async with running_proxy(v1.url, v2.url, max_reply_bytes=256 * 1024) as (url, _p, hooks), \
            aiohttp.ClientSession() as http:
        for stream in (False, True):
            async with http.post(url + "/v1/completions", json={
                    "prompt": "x", "temperature": 0, "stream": stream}) as resp:
                size = len(await resp.read())
            assert size > 3 * 1024 * 1024
        jobs = await hooks.wait_done(2)
    for job in jobs:
        assert job.v1 is not None and job.v1.error is not None
        assert job.v1.error.startswith("too-large")


async def test_the_shadow_queue_holds_a_bounded_number_of_bytes(
        scripted_server: Start, monkeypatch: pytest.MonkeyPatch) -> None:
    import shadow_burnin.io.proxy.mirror as proxy_module

    monkeypatch.setattr(proxy_module, "QUEUE_BYTES", 50_000)
    v1 = await scripted_server(reply="ok")
    v2 = await scripted_server()
    await v2.set_fault("hang")  # nothing leaves the queue
    big = {"prompt": "y" * 20_000, "temperature": 0}
    async with running_proxy(v1.url, v2.url, shadow_concurrency=1, grace=0) as (
            url, proxy, _hooks), aiohttp.ClientSession() as http:
        for _ in range(6):
            async with http.post(url + "/v1/completions", json=big) as resp:
                assert resp.status == 200
        for _ in range(500):
            if proxy.stats.mirrored + proxy.stats.dropped_full == 6:
                break
            await asyncio.sleep(0.01)
        # two queued within 50 000 bytes (and one more if a worker took the first out
        # of the queue already); the rest dropped
        assert proxy.stats.mirrored + proxy.stats.dropped_full == 6
        assert proxy.stats.mirrored in (2, 3) and proxy.stats.dropped_full >= 3


async def test_a_client_that_leaves_right_after_done_has_had_the_whole_stream(
        scripted_server: Start) -> None:
    """v1 sends its last event and ``[DONE]``, then holds the chunked body's terminator
    back until the client has gone: the client had the whole reply, so the round is
    compared, not ``client-cancelled`` (the early close is still counted)."""
    left = asyncio.Event()
    events = [b'data: {"choices": [{"text": "whole", "finish_reason": "stop"}]}\n\n',
              b"data: [DONE]\n\n"]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n" +
                     b"".join(b"%x\r\n%b\r\n" % (len(e), e) for e in events))
        await writer.drain()
        await left.wait()
        with contextlib.suppress(ConnectionError):
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        writer.close()

    v1 = await asyncio.start_server(serve, "127.0.0.1", 0)
    v2 = await scripted_server(reply="whole")
    v1_url = f"http://127.0.0.1:{v1.sockets[0].getsockname()[1]}"
    try:
        async with running_proxy(v1_url, v2.url) as (url, proxy, hooks):
            async with aiohttp.ClientSession() as http:
                resp = await http.post(url + "/v1/completions", json={
                    "prompt": "x", "temperature": 0, "stream": True})
                got = b""
                while b"[DONE]" not in got:
                    chunk = await resp.content.readany()
                    assert chunk, got
                    got += chunk
                resp.close()  # gone before the terminator
            for _ in range(500):  # polled, bounded: the proxy saw the client leave
                if proxy.stats.client_cancelled:
                    break
                await asyncio.sleep(0.01)
            left.set()
            [job] = await hooks.wait_done(1)
    finally:
        v1.close()
    assert proxy.stats.client_cancelled == 1
    assert not job.cancelled
    assert job.v1 is not None and job.v1.text == "whole" and job.v1.error is None
    assert job.v2 is not None and job.v2.text == "whole"
