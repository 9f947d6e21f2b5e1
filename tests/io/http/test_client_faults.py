"""SideClient against every fault of the scripted server: exact error codes, never a raise,
and the same client instance goes on to complete a normal request afterwards."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from shadow_burnin.core.prompt import Message, Prompt
from shadow_burnin.core.records import SideReply
from shadow_burnin.io.http.client import Endpoint, RequestSpec, SideClient
from tests.servers.scripted import ScriptedServer

TEXT = "Première réponse: é, 日本語, 🙂 emoji\nline two — ok\n\nlast line"
PLAIN = Prompt(id="p1", category="test", prompt="Say something")
CHAT = Prompt(id="p2", category="test", messages=(Message("system", "Be brief."),
                                                  Message("user", "Say something")))
SECRET = "sk-test-SECRET-0123456789"
API_STREAM = [(api, stream) for api in ("chat", "completions") for stream in (False, True)]


def code(reply: SideReply) -> str | None:
    """The error code: the part before ``": detail"``."""
    return None if reply.error is None else reply.error.split(": ", 1)[0]


def spec(api: str = "chat", stream: bool = True, **kw: Any) -> RequestSpec:
    return RequestSpec(api=api, stream=stream, **kw)  # type: ignore[arg-type]


async def start(scripted_server: Any, **options: Any) -> ScriptedServer:
    options.setdefault("reply", TEXT)
    options.setdefault("usage", "final")  # streams carry usage (the client asks for none)
    return await scripted_server(**options)


async def assert_recovers(client: SideClient, server: ScriptedServer) -> None:
    """After a fault, the same client instance completes a normal request."""
    await server.set_fault(None)
    reply = await client.complete(PLAIN)
    assert reply.error is None and reply.replied and reply.text == TEXT


async def faulted(server: ScriptedServer, client: SideClient, fault: str) -> SideReply:
    """One request under ``fault``; then the recovery check."""
    await server.set_fault(fault, times=1)
    reply = await client.complete(PLAIN)
    assert not reply.replied and reply.error is not None
    await assert_recovers(client, server)
    return reply


# --- success ------------------------------------------------------------------------


@pytest.mark.parametrize(("api", "stream"), API_STREAM)
@pytest.mark.parametrize("wire_split", [None, 1])
async def test_exact_text(scripted_server: Any, api: str, stream: bool,
                          wire_split: int | None) -> None:
    """Multi-line, multi-byte text, even when every byte is a separate write."""
    server = await start(scripted_server, delay_ms=120, chunk_chars=1, wire_split=wire_split)
    async with SideClient(Endpoint(url=server.url, model="m"), spec(api, stream)) as client:
        for prompt in (PLAIN, CHAT):
            reply = await client.complete(prompt)
            assert reply.error is None and reply.replied and not reply.truncated
            assert reply.text == TEXT and reply.status == 200
            assert reply.finish_reason == "stop"
            assert reply.completion_tokens == len(TEXT.split())
            assert reply.latency_ms is not None and reply.latency_ms >= 120
            if stream:
                assert reply.ttft_ms is not None and 120 <= reply.ttft_ms <= reply.latency_ms
            else:
                assert reply.ttft_ms is None


@pytest.mark.parametrize("usage", ["chunk", "final"])
async def test_stream_usage_forms(scripted_server: Any, usage: str) -> None:
    server = await start(scripted_server, usage=usage)
    async with SideClient(Endpoint(url=server.url, model="m"), spec()) as client:
        reply = await client.complete(PLAIN)
    assert reply.replied and reply.completion_tokens == len(TEXT.split())


@pytest.mark.parametrize(("api", "stream"), API_STREAM)
async def test_max_tokens_and_request_body(scripted_server: Any, api: str, stream: bool) -> None:
    server = await start(scripted_server)
    async with SideClient(Endpoint(url=server.url, model="m-1"),
                          spec(api, stream, max_tokens=3)) as client:
        first, second = await client.complete(PLAIN), await client.complete(PLAIN)
    assert first.text == second.text == "Première réponse: é,"
    assert first.finish_reason == "length" and first.completion_tokens == 3
    a, b = server.requests
    assert a.raw == b.raw and a.path == ("/v1/chat/completions" if api == "chat" else
                                         "/v1/completions")
    assert a.body["temperature"] == 0 and a.body["model"] == "m-1"
    assert a.body["max_tokens"] == 3 and a.body["stream"] is stream
    assert "authorization" not in a.headers


async def test_api_key_sent_never_shown(scripted_server: Any) -> None:
    server = await start(scripted_server)
    ep = Endpoint(url=server.url, model="m", api_key=SECRET)
    errors = []
    async with SideClient(ep, spec()) as client:
        assert SECRET not in repr(client) and SECRET not in repr(ep)
        assert SECRET not in str(ep)
        reply = await client.complete(PLAIN)
        for fault in ("http-500", "http-429", "invalid-json", "redirect", "sse-cut"):
            await server.set_fault(fault, times=1)
            errors.append((await client.complete(PLAIN)).error)
        await server.set_fault("refuse")
        errors.append((await client.complete(PLAIN)).error)
    assert reply.replied
    assert all(r.headers["Authorization"] == f"Bearer {SECRET}" for r in server.requests)
    assert all(e is not None and SECRET not in e for e in errors), errors


async def test_list_models(scripted_server: Any) -> None:
    server = await start(scripted_server, model="served-model")
    async with SideClient(Endpoint(url=server.url, model="m"), spec()) as client:
        assert await client.list_models() == ["served-model"]
    assert server.model_requests == 1


@pytest.mark.parametrize("fault", ["http-503", "invalid-json", "no-choices", "null-content",
                                   "invalid-utf8", "reset-after-headers", "redirect", "hang"])
async def test_list_models_fault(scripted_server: Any, fault: str) -> None:
    """Never raises: an empty list, within the timeout; a 3xx is not followed either."""
    server = await start(scripted_server, model="served-model", models_fault=fault)
    async with SideClient(Endpoint(url=server.url, model="m"), spec(timeout_s=1.5)) as client:
        assert await client.list_models() == []  # returns at all: "hang" never ends
        server.models_fault = None
        assert await client.list_models() == ["served-model"]
    assert server.redirect_hits == 0


# --- connection faults --------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_refused(scripted_server: Any, stream: bool) -> None:
    server = await start(scripted_server)
    async with SideClient(Endpoint(url=server.url), spec(stream=stream)) as client:
        assert (await client.complete(PLAIN)).replied  # a pooled keep-alive connection
        await server.set_fault("refuse")
        reply = await client.complete(PLAIN)
        assert code(reply) == "connection-refused" and not reply.replied
        assert reply.text is None and reply.status is None
        await assert_recovers(client, server)


@pytest.mark.parametrize("fault", ["reset-after-headers", "reset-mid-body"])
@pytest.mark.parametrize(("api", "stream"), API_STREAM)
async def test_reset(scripted_server: Any, fault: str, api: str, stream: bool) -> None:
    server = await start(scripted_server)
    async with SideClient(Endpoint(url=server.url), spec(api, stream)) as client:
        reply = await faulted(server, client, fault)
    assert code(reply) == "connection-reset", reply.error
    assert reply.status == 200


@pytest.mark.parametrize(("fault", "stream"), [(f, s) for f in ("drip", "hang")
                                               for s in (False, True)])
async def test_timeout(scripted_server: Any, fault: str, stream: bool) -> None:
    server = await start(scripted_server)
    async with SideClient(Endpoint(url=server.url), spec(stream=stream, timeout_s=1.5)) as c:
        await server.set_fault(fault, times=1)
        start_t = time.monotonic()
        reply = await c.complete(PLAIN)
        elapsed = time.monotonic() - start_t
        assert code(reply) == "timeout", reply.error
        assert not reply.replied and elapsed >= 1.5 * 0.95  # the timeout, not earlier
        await assert_recovers(c, server)


# --- HTTP-level faults --------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 429])
@pytest.mark.parametrize("stream", [False, True])
async def test_http_status(scripted_server: Any, status: int, stream: bool) -> None:
    server = await start(scripted_server)
    async with SideClient(Endpoint(url=server.url), spec(stream=stream)) as client:
        reply = await faulted(server, client, f"http-{status}")
    assert code(reply) == f"http-{status}" and reply.status == status
    assert reply.text is None
    if status == 429:
        assert reply.error == "http-429: retry-after 7"


@pytest.mark.parametrize("stream", [False, True])
async def test_redirect_not_followed(scripted_server: Any, stream: bool) -> None:
    server = await start(scripted_server)
    async with SideClient(Endpoint(url=server.url), spec(stream=stream)) as client:
        reply = await faulted(server, client, "redirect")
    assert code(reply) == "redirect" and reply.status == 302
    assert server.redirect_hits == 0


# --- bodies that are not a usable reply --------------------------------------------


@pytest.mark.parametrize(("fault", "expected"), [
    ("invalid-json", "invalid-json"),
    ("no-choices", "bad-shape"),
    ("null-content", "bad-shape"),
    ("invalid-utf8", "invalid-utf8"),
])
@pytest.mark.parametrize(("api", "stream"), API_STREAM)
async def test_bad_body(scripted_server: Any, fault: str, expected: str, api: str,
                        stream: bool) -> None:
    server = await start(scripted_server)
    async with SideClient(Endpoint(url=server.url), spec(api, stream)) as client:
        reply = await faulted(server, client, fault)
    assert code(reply) == expected, reply.error
    assert reply.status == 200 and not reply.truncated


@pytest.mark.parametrize("api", ["chat", "completions"])
async def test_stream_cut(scripted_server: Any, api: str) -> None:
    server = await start(scripted_server, chunk_chars=5)
    async with SideClient(Endpoint(url=server.url), spec(api)) as client:
        reply = await faulted(server, client, "sse-cut")
    assert code(reply) == "stream-cut", reply.error
    assert reply.truncated and reply.text and TEXT.startswith(reply.text)
    assert len(reply.text) < len(TEXT) and reply.finish_reason is None


@pytest.mark.parametrize("api", ["chat", "completions"])
async def test_stream_incomplete(scripted_server: Any, api: str) -> None:
    server = await start(scripted_server)
    async with SideClient(Endpoint(url=server.url), spec(api)) as client:
        reply = await faulted(server, client, "sse-no-done")
    assert code(reply) == "stream-incomplete", reply.error
    assert reply.text == TEXT and not reply.truncated and reply.finish_reason == "stop"


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


@pytest.mark.parametrize("stream", [False, True])
async def test_too_large(spawn_scripted: Any, stream: bool) -> None:
    """A 10 MB reply against a 4 MB cap: refused without holding it (server out of process)."""
    url, _ = spawn_scripted(reply_mode="fixed", reply=TEXT, fault="huge", fault_times=1,
                            usage="final")
    async with SideClient(Endpoint(url=url), spec(stream=stream)) as client:
        before = _rss_kb()
        reply = await client.complete(PLAIN)
        grown_mb = (_rss_kb() - before) / 1024
        assert code(reply) == "too-large", reply.error
        assert reply.text is None and not reply.replied
        assert grown_mb < 30, f"RSS grew {grown_mb:.1f} MB"
        after = await client.complete(PLAIN)
        assert after.replied and after.text == TEXT


async def test_error_texts_are_one_line_json_safe(scripted_server: Any) -> None:
    """Error strings go into the JSONL log: one line, serializable."""
    server = await start(scripted_server)
    async with SideClient(Endpoint(url=server.url), spec(timeout_s=1.5)) as client:
        for fault in ("invalid-json", "invalid-utf8", "no-choices", "http-503", "sse-cut"):
            reply = await faulted(server, client, fault)
            assert reply.error is not None and "\n" not in reply.error
            json.dumps(reply.to_json())


async def test_streamed_replies_keep_the_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    """The end of the body after [DONE] is read, so the connection goes back to the pool
    (aiohttp closes one released mid-body: the next request would connect again). The
    server here ends each body only once the client reads past its [DONE], and moves the
    client's clock on by an hour in between: a latency that ended at the body's end, not
    at [DONE], would show that hour (no wall-clock bound)."""
    import asyncio
    import time as real_time
    from types import SimpleNamespace

    import aiohttp
    from aiohttp import web

    from shadow_burnin.io.http import client as client_mod

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for piece in ("Hello", " there"):
            chunk = {"choices": [{"index": 0, "delta": {"content": piece},
                                  "finish_reason": None}]}
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        end = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        await resp.write(b"data: " + json.dumps(end).encode() + b"\n\ndata: [DONE]\n\n")
        # a safety timeout only: the client reads past [DONE] right away
        await asyncio.wait_for(draining.wait(), timeout=60)
        draining.clear()
        offset[0] += 3600.0  # the hour the client waits for the end of the body
        await resp.write_eof()
        return resp

    draining = asyncio.Event()
    offset = [0.0]
    drain = client_mod._drain

    async def signalled_drain(*args: Any, **kwargs: Any) -> Any:
        draining.set()
        return await drain(*args, **kwargs)

    monkeypatch.setattr(client_mod, "_drain", signalled_drain)
    monkeypatch.setattr(client_mod, "time", SimpleNamespace(
        perf_counter=lambda: real_time.perf_counter() + offset[0]))
    created: list[int] = []
    original = aiohttp.TCPConnector._create_connection

    async def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        created.append(1)
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(aiohttp.TCPConnector, "_create_connection", counting)
    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with SideClient(Endpoint(f"http://127.0.0.1:{port}"), spec()) as client:
            for _ in range(10):
                reply = await client.complete(PLAIN)
                assert reply.error is None and reply.text == "Hello there"
                # the latency ends at [DONE], not after the hour-long wait for the body's end
                assert reply.latency_ms is not None and reply.latency_ms < 3_600_000
    finally:
        await runner.cleanup()
    assert len(created) == 1
