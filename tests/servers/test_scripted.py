"""The scripted server speaks the OpenAI protocol, and each fault shows at the HTTP level."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from typing import Any

import aiohttp
import pytest

from tests.servers.faults import FAULTS
from tests.servers.scripted import ScriptedServer, cut_to_tokens, lorem_reply

TEXT = "Première ligne: é 日本 🙂\nsecond line\nthird"
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hello there"}],
        "temperature": 0}
COMPLETIONS = {"model": "m", "prompt": "hello there", "temperature": 0}
PATHS = {"chat": "/v1/chat/completions", "completions": "/v1/completions"}
SHORT = aiohttp.ClientTimeout(total=5)


def events(raw: bytes) -> list[bytes]:
    """The ``data:`` payloads of an SSE body, in order."""
    return [block[len(b"data: "):] for block in raw.split(b"\n\n") if block.startswith(b"data: ")]


def stream_text(raw: bytes, api: str) -> str:
    out = []
    for payload in events(raw):
        if payload == b"[DONE]":
            continue
        for choice in json.loads(payload).get("choices", []):
            part = choice["delta"].get("content") if api == "chat" else choice["text"]
            out.append(part or "")
    return "".join(out)


async def post(server: ScriptedServer, api: str, stream: bool, **extra: Any) -> tuple[
        int, dict[str, str], bytes]:
    body = {**(CHAT if api == "chat" else COMPLETIONS), "stream": stream, **extra}
    async with aiohttp.ClientSession(timeout=SHORT) as session, session.post(
            server.url + PATHS[api], json=body, allow_redirects=False) as resp:
        return resp.status, dict(resp.headers), await resp.read()


@pytest.fixture(autouse=True)
def no_server_errors(caplog: pytest.LogCaptureFixture) -> Any:
    """No handler may end in an exception (aiohttp would log it at ERROR)."""
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


async def test_models(scripted_server: Any) -> None:
    server = await scripted_server(model="my-model")
    async with aiohttp.ClientSession() as session, session.get(server.url + "/v1/models") as r:
        data = await r.json()
    assert data["object"] == "list" and data["data"][0]["id"] == "my-model"
    assert data["data"][0]["object"] == "model" and server.model_requests == 1


@pytest.mark.parametrize("api", ["chat", "completions"])
async def test_non_stream_shape(scripted_server: Any, api: str) -> None:
    server = await scripted_server(reply=TEXT)
    status, headers, raw = await post(server, api, False)
    data = json.loads(raw)
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    choice = data["choices"][0]
    assert (choice["message"]["content"] if api == "chat" else choice["text"]) == TEXT
    assert choice["finish_reason"] == "stop"
    assert data["usage"]["completion_tokens"] == len(TEXT.split())


@pytest.mark.parametrize("api", ["chat", "completions"])
@pytest.mark.parametrize("usage", ["auto", "chunk", "final", "none"])
async def test_stream_shape(scripted_server: Any, api: str, usage: str) -> None:
    server = await scripted_server(reply=TEXT, chunk_chars=3, usage=usage)
    status, headers, raw = await post(server, api, True, stream_options={"include_usage": True})
    assert status == 200 and headers["Content-Type"] == "text/event-stream"
    payloads = events(raw)
    assert payloads[-1] == b"[DONE]" and raw.endswith(b"data: [DONE]\n\n")
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert stream_text(raw, api) == TEXT
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "stop" and not any(finishes[:-1])
    usages = [c["usage"] for c in chunks if "usage" in c]
    assert len(usages) == (0 if usage == "none" else 1)
    if usages:
        assert usages[0]["completion_tokens"] == len(TEXT.split())


async def test_default_reply_and_max_tokens(scripted_server: Any) -> None:
    server = await scripted_server()
    _, _, raw = await post(server, "chat", False)
    assert json.loads(raw)["choices"][0]["message"]["content"] == (
        "Answer to: hello there\nline two\nline three")
    _, _, raw = await post(server, "completions", False, max_tokens=4)
    choice = json.loads(raw)["choices"][0]
    assert choice["text"] == "Answer to: hello there" and choice["finish_reason"] == "length"
    _, _, raw = await post(server, "completions", True, max_tokens=4)
    assert stream_text(raw, "completions") == "Answer to: hello there"
    assert b'"finish_reason":"length"' in raw
    assert cut_to_tokens("a  b\nc", 2) == ("a  b", 2, True)
    assert cut_to_tokens("a b", 5) == ("a b", 2, False)


async def test_reply_callable_finish_reason_and_lorem(scripted_server: Any) -> None:
    server = await scripted_server(reply=lambda body: body["prompt"][::-1],
                                   finish_reason="length")
    _, _, raw = await post(server, "completions", False)
    choice = json.loads(raw)["choices"][0]
    assert choice["text"] == "ereht olleh" and choice["finish_reason"] == "length"
    make = lorem_reply(30)
    assert make({"prompt": "a"}) == make({"prompt": "a"}) != make({"prompt": "b"})
    assert len(make({"prompt": "a"}).split()) == 30


async def test_requests_recorded(scripted_server: Any) -> None:
    server = await scripted_server()
    async with aiohttp.ClientSession() as session:
        for _ in range(2):
            async with session.post(server.url + PATHS["chat"], json=CHAT,
                                    headers={"Authorization": "Bearer sk-x"}) as resp:
                await resp.read()
    assert server.count == 2 and [r.n for r in server.requests] == [1, 2]
    first = server.requests[0]
    assert first.headers["authorization"] == "Bearer sk-x" and first.body == CHAT
    assert first.raw == server.requests[1].raw and first.path == PATHS["chat"]


async def test_delay_chunking_and_wire_split(scripted_server: Any) -> None:
    server = await scripted_server(reply=TEXT, delay_ms=150, per_chunk_ms=20, chunk_chars=10)
    start = time.monotonic()
    _, _, raw = await post(server, "chat", True)
    pieces = -(-len(TEXT) // 10)  # role chunk, pieces, finish chunk, [DONE]: pieces+2 pauses
    assert time.monotonic() - start >= 0.15 + 0.02 * (pieces + 2)
    assert stream_text(raw, "chat") == TEXT
    server.delay_ms, server.per_chunk_ms, server.chunk_chars, server.wire_split = 0, 1, 1, 3
    _, _, split = await post(server, "chat", True)  # 3-byte writes cut through characters
    assert stream_text(split, "chat") == TEXT


async def test_diverge_after(scripted_server: Any) -> None:
    server = await scripted_server(reply="same", diverge_after=2, salt="!")
    texts = [json.loads((await post(server, "completions", False))[2])["choices"][0]["text"]
             for _ in range(4)]
    assert texts == ["same", "same", "same!", "same!"]
    server.diverge_mode = "prepend"
    assert json.loads((await post(server, "completions", False))[2])["choices"][0][
        "text"] == "!same"


async def test_fault_ranges(scripted_server: Any) -> None:
    server = await scripted_server(fault="http-503", fault_times=2)
    statuses = [(await post(server, "chat", False))[0] for _ in range(3)]
    assert statuses == [503, 503, 200]
    await server.set_fault("http-500", first=5, last=6)
    statuses = [(await post(server, "chat", False))[0] for _ in range(4)]
    assert statuses == [200, 500, 500, 200]
    await server.set_fault("http-502")
    assert (await post(server, "chat", False))[0] == 502
    await server.set_fault(None)
    assert (await post(server, "chat", False))[0] == 200
    with pytest.raises(ValueError):
        await server.set_fault("nope")


async def test_refuse(scripted_server: Any) -> None:
    server = await scripted_server()
    async with aiohttp.ClientSession(timeout=SHORT) as session:
        async with session.get(server.url + "/v1/models") as resp:  # a pooled connection
            assert resp.status == 200
        await server.set_fault("refuse")
        with pytest.raises(aiohttp.ClientConnectorError):
            await session.get(server.url + "/v1/models")
        await server.set_fault(None)
        async with session.get(server.url + "/v1/models") as resp:
            assert resp.status == 200
        await server.set_fault("refuse", for_s=0.2)
        with pytest.raises(aiohttp.ClientConnectorError):
            await session.get(server.url + "/v1/models")
        # the fault lifts by itself: poll (bounded) until a connection is accepted again
        for _ in range(200):
            try:
                async with session.get(server.url + "/v1/models") as resp:
                    assert resp.status == 200
                    break
            except aiohttp.ClientConnectorError:
                await asyncio.sleep(0.02)
        else:
            raise AssertionError("the refuse fault did not lift")


@pytest.mark.parametrize("fault", ["reset-after-headers", "reset-mid-body"])
@pytest.mark.parametrize("stream", [False, True])
async def test_resets(scripted_server: Any, fault: str, stream: bool) -> None:
    server = await scripted_server(reply=TEXT, fault=fault)
    body = {**CHAT, "stream": stream}
    async with aiohttp.ClientSession(timeout=SHORT) as session, session.post(
            server.url + PATHS["chat"], json=body) as resp:
        assert resp.status == 200
        received = b""
        with pytest.raises((aiohttp.ClientPayloadError, aiohttp.ClientOSError,
                            aiohttp.ServerDisconnectedError)):
            async for data in resp.content.iter_any():
                received += data
    assert (received == b"") == (fault == "reset-after-headers")


@pytest.mark.parametrize("api", ["chat", "completions"])
async def test_sse_cut_and_no_done(scripted_server: Any, api: str) -> None:
    server = await scripted_server(reply=TEXT, fault="sse-cut")
    _, _, raw = await post(server, api, True)
    assert b"[DONE]" not in raw and b'"finish_reason":"stop"' not in raw
    assert TEXT.startswith(stream_text(raw, api)) and stream_text(raw, api)
    _, _, raw = await post(server, api, False)  # no stream: a normal reply
    assert json.loads(raw)["choices"][0]["finish_reason"] == "stop"
    await server.set_fault("sse-no-done")
    _, _, raw = await post(server, api, True)
    assert b"[DONE]" not in raw and b'"finish_reason":"stop"' in raw
    assert stream_text(raw, api) == TEXT


@pytest.mark.parametrize("status", [500, 502, 503, 429])
@pytest.mark.parametrize("stream", [False, True])
async def test_http_errors(scripted_server: Any, status: int, stream: bool) -> None:
    server = await scripted_server(fault=f"http-{status}")
    got, headers, raw = await post(server, "chat", stream)
    assert got == status and "error" in json.loads(raw)
    assert headers.get("Retry-After") == ("7" if status == 429 else None)


@pytest.mark.parametrize("api", ["chat", "completions"])
async def test_bad_bodies(scripted_server: Any, api: str) -> None:
    server = await scripted_server(reply=TEXT, fault="invalid-json")
    with pytest.raises(json.JSONDecodeError):
        json.loads((await post(server, api, False))[2])
    bad = [p for p in events((await post(server, api, True))[2]) if p != b"[DONE]"]
    assert sum(1 for p in bad if not _is_json(p)) == 1
    await server.set_fault("no-choices")
    assert "choices" not in json.loads((await post(server, api, False))[2])
    raw = (await post(server, api, True))[2]
    assert all("choices" not in json.loads(p) for p in events(raw)[:-1])
    await server.set_fault("null-content")
    choice = json.loads((await post(server, api, False))[2])["choices"][0]
    assert (choice["message"]["content"] if api == "chat" else choice["text"]) is None
    raw = (await post(server, api, True))[2]
    assert b'"content":null' in raw if api == "chat" else b'"text":null' in raw
    await server.set_fault("invalid-utf8")
    for stream in (False, True):
        raw = (await post(server, api, stream))[2]
        assert b"\xff\xfe" in raw
        with pytest.raises(UnicodeDecodeError):
            raw.decode()


def _is_json(payload: bytes) -> bool:
    try:
        json.loads(payload)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("stream", [False, True])
async def test_huge(scripted_server: Any, stream: bool) -> None:
    server = await scripted_server(fault="huge")
    _, headers, raw = await post(server, "chat", stream)
    assert len(raw) >= 10 * 1024 * 1024 and "Content-Length" not in headers
    if stream:
        assert len(stream_text(raw, "chat")) >= 10 * 1024 * 1024 and raw.endswith(b"[DONE]\n\n")
    else:
        assert len(json.loads(raw)["choices"][0]["message"]["content"]) >= 10 * 1024 * 1024


async def test_huge_client_leaves_early(scripted_server: Any) -> None:
    server = await scripted_server(fault="huge")
    async with aiohttp.ClientSession(timeout=SHORT) as session, session.post(
            server.url + PATHS["chat"], json=CHAT) as resp:
        await resp.content.read(100_000)
    await _until_idle(server)


async def _until_idle(server: ScriptedServer, tries: int = 200) -> None:
    """Poll (a bounded number of times) until no handler is running."""
    for _ in range(tries):
        if not server.active:
            return
        await asyncio.sleep(0.02)
    assert server.active == 0


@pytest.mark.parametrize("stream", [False, True])
async def test_drip(scripted_server: Any, stream: bool) -> None:
    server = await scripted_server(fault="drip", drip_interval_s=0.1)
    body = {**CHAT, "stream": stream}
    async with aiohttp.ClientSession(timeout=SHORT) as session, session.post(
            server.url + PATHS["chat"], json=body) as resp:
        assert resp.status == 200
        start, got = time.monotonic(), b""
        while len(got) < 4:
            got += await resp.content.readany()
        assert time.monotonic() - start >= 0.25  # 3 pauses of 0.1 s at least
        assert got == (b": dr" if stream else b"    ")
    await _until_idle(server)


@pytest.mark.parametrize("stream", [False, True])
async def test_hang(scripted_server: Any, stream: bool) -> None:
    server = await scripted_server(fault="hang")
    start = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.5)) as session:
        with pytest.raises(asyncio.TimeoutError):
            await session.post(server.url + PATHS["chat"], json={**CHAT, "stream": stream})
    assert 0.5 <= time.monotonic() - start < 1.5
    await _until_idle(server)


async def test_redirect(scripted_server: Any) -> None:
    server = await scripted_server(fault="redirect")
    status, headers, _ = await post(server, "chat", False)
    assert status == 302 and headers["Location"] == "/redirected/v1/chat/completions"
    async with aiohttp.ClientSession(timeout=SHORT) as session, session.post(
            server.url + PATHS["chat"], json=CHAT) as resp:
        assert resp.status == 200 and server.redirect_hits == 1  # followed: a normal reply


@pytest.mark.parametrize("fault", ["http-503", "invalid-json", "no-choices", "redirect"])
async def test_models_fault(scripted_server: Any, fault: str) -> None:
    server = await scripted_server(models_fault=fault)
    async with aiohttp.ClientSession() as session, session.get(
            server.url + "/v1/models", allow_redirects=False) as resp:
        raw = await resp.read()
    assert resp.status == {"http-503": 503, "redirect": 302}.get(fault, 200)
    if fault == "no-choices":
        assert "data" not in json.loads(raw)


async def test_stop_leaves_no_tasks(scripted_server: Any) -> None:
    """Faulted handlers still waiting when the server stops end at once."""
    server = await scripted_server(fault="hang")
    session = aiohttp.ClientSession()
    pending = [asyncio.create_task(session.post(server.url + PATHS["chat"], json=CHAT))
               for _ in range(3)]
    for _ in range(200):  # poll (bounded) until the three handlers hang
        if server.active == 3:
            break
        await asyncio.sleep(0.01)
    assert server.active == 3
    await server.stop()  # returns although the hang fault never ends by itself
    assert server.active == 0
    await asyncio.gather(*pending, return_exceptions=True)
    await session.close()
    assert asyncio.all_tasks() == {asyncio.current_task()}


def test_fault_names_are_complete() -> None:
    assert len(FAULTS) == 17 and len(set(FAULTS)) == 17


async def test_subprocess(spawn_scripted: Any) -> None:
    url, proc = spawn_scripted(reply_mode="fixed", reply="hi there", fault="http-503",
                               fault_times=1, diverge_after=2, salt="#", usage="chunk")
    assert url.startswith("http://127.0.0.1:") and proc.poll() is None
    async with aiohttp.ClientSession(timeout=SHORT) as session:
        statuses, texts = [], []
        for _ in range(4):
            async with session.post(url + PATHS["completions"], json=COMPLETIONS) as resp:
                statuses.append(resp.status)
                if resp.status == 200:
                    texts.append((await resp.json())["choices"][0]["text"])
        assert statuses == [503, 200, 200, 200]
        assert texts == ["hi there", "hi there#", "hi there#"]
        async with session.get(url + "/_scripted/state") as resp:
            state = await resp.json()
        assert state["count"] == 4 and state["fault"] == {"name": "http-503", "first": 1,
                                                          "last": 1}


def test_subprocess_refuse_and_reap(spawn_scripted: Any) -> None:
    url, proc = spawn_scripted(fault="refuse")
    port = int(url.rsplit(":", 1)[1])
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.connect(("127.0.0.1", port))
    proc.terminate()
    assert proc.wait(5) == 0


async def test_subprocess_serves_a_burst(spawn_scripted: Any) -> None:
    """The subprocess server takes a soak-benchmark burst (2 000 streamed requests on 20
    connections) and answers every one completely; its rate is printed, not asserted (a
    shared machine sets it)."""
    url, _ = spawn_scripted(reply_mode="lorem", words=20)
    body = {**COMPLETIONS, "stream": True}
    done: list[bool] = []
    async with aiohttp.ClientSession() as session:

        async def worker(count: int) -> None:
            for _ in range(count):
                async with session.post(url + PATHS["completions"], json=body) as resp:
                    data = await resp.read()
                    done.append(resp.status == 200 and data.rstrip().endswith(b"[DONE]"))

        start = time.monotonic()
        await asyncio.gather(*(worker(100) for _ in range(20)))
        elapsed = time.monotonic() - start
    print(f"2000 stream requests in {elapsed:.2f}s")
    assert len(done) == 2000 and all(done)
