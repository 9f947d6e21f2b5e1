"""What a server echoes (secrets, header values) and replies that are odd but valid: a lone
surrogate escape, a plain JSON answer to a streamed request."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from shadow_burnin.core.prompt import Prompt
from shadow_burnin.core.records import SideReply
from shadow_burnin.core.rounds import build_round
from shadow_burnin.io.http.client import Endpoint, RequestSpec, SideClient, retry_after
from shadow_burnin.io.log.logread import find_round
from shadow_burnin.io.log.store import Store

KEY = "sk-live-SECRET-7f3a9c21"
PLAIN = Prompt(id="p1", category="t", prompt="Say something")
Handler = Callable[[web.Request], Any]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Any]]:
    runners: list[web.AppRunner] = []

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield start
    for runner in runners:
        await runner.cleanup()


async def ask(url: str, *, stream: bool = False, api: str = "completions",
              key: str | None = KEY) -> SideReply:
    spec = RequestSpec(api=api, stream=stream)  # type: ignore[arg-type]
    async with SideClient(Endpoint(url, "m", api_key=key), spec) as client:
        return await client.complete(PLAIN)


@pytest.mark.parametrize("stream", [False, True])
async def test_echoed_authorization_never_reaches_the_reply(serve: Any, stream: bool) -> None:
    """Defect 4(a): a 429 whose Retry-After echoes the Authorization header."""
    async def echo(request: web.Request) -> web.Response:
        return web.json_response({"error": "slow down"}, status=429,
                                 headers={"Retry-After": request.headers["Authorization"]})
    reply = await ask(await serve(echo), stream=stream)
    assert reply.error == "http-429"  # the bogus value is dropped, not kept
    assert KEY not in orjson.dumps(reply.to_json()).decode()


@pytest.mark.parametrize(("value", "kept"), [
    ("7", "7"), (" 120 ", "120"), ("Wed, 21 Oct 2026 07:28:00 GMT",
                                    "Wed, 21 Oct 2026 07:28:00 GMT"),
    ("Bearer sk-live-SECRET", None), ("7; rm -rf /", None), ("-1", None), ("1e9", None),
    ("", None), ("99999999999999", None), ("Wed, 21 Oct 2026 07:28:00", None),
])
def test_retry_after_is_a_number_or_an_http_date(value: str, kept: str | None) -> None:
    assert retry_after(value) == kept


async def test_echoes_in_other_errors_are_redacted(serve: Any) -> None:
    """A redirect's Location and a stream error event that echo the key."""
    async def handler(request: web.Request) -> web.StreamResponse:
        auth = request.headers["Authorization"]
        if request.query.get("mode") == "redirect" or "redirect" in request.path:
            raise web.HTTPFound(f"/login?token={auth.split()[1]}&h={auth}")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"data: " + orjson.dumps({"error": f"bad auth: {auth}"}) + b"\n\n")
        return resp
    url = await serve(handler)
    streamed = await ask(url, stream=True)
    assert streamed.error is not None and streamed.error.startswith("bad-shape: error event")
    redirected = await ask(url + "/redirect", stream=False)
    assert redirected.error is not None and redirected.error.startswith("redirect: 302")
    for reply in (streamed, redirected):
        assert KEY not in reply.error and "[redacted]" in reply.error


async def test_a_reply_text_holding_the_key_is_redacted(serve: Any) -> None:
    async def parrot(request: web.Request) -> web.Response:
        text = f"your header was {request.headers['Authorization']}"
        return web.json_response({"choices": [{"text": text, "finish_reason": "stop"}]})
    reply = await ask(await serve(parrot))
    assert reply.replied and reply.text == "your header was Bearer [redacted]"
    assert reply.extra["redacted"] is True


SURROGATE_BODY = b'{"choices":[{"text":"a\\ud800b \\\\ud800","finish_reason":"stop"}]}'


@pytest.mark.parametrize("stream", [False, True])
async def test_lone_surrogate_is_a_reply_kept_losslessly(serve: Any, tmp_path: Path,
                                                         stream: bool) -> None:
    """Defect 11: a lone surrogate escape is valid JSON; it made both sides
    `invalid-json`. Now it is the reply: compared byte for byte (surrogatepass) and
    logged losslessly."""
    async def handler(request: web.Request) -> web.StreamResponse:
        if not stream:
            return web.Response(body=SURROGATE_BODY, content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"data: " + SURROGATE_BODY + b"\n\ndata: [DONE]\n\n")
        return resp
    url = await serve(handler)
    reply = await ask(url, stream=stream)
    assert reply.error is None and reply.text == "a\ud800b \\ud800"
    other = SideReply(text="a\ud801b \\ud800", latency_ms=1.0)
    same = build_round(1, "2026-11-29T00:00:00.000Z", PLAIN, reply, reply, first="v1",
                       setup="s", seed=1, cursor=0)
    differ = build_round(2, "2026-11-29T00:00:01.000Z", PLAIN, reply, other, first="v1",
                         setup="s", seed=1, cursor=1)
    assert same.bucket == "exact"
    assert differ.bucket == "no-match" and differ.divergence_byte == 3  # its 3rd UTF-8 byte
    log = tmp_path / "s.jsonl"
    with Store(log, tmp_path / "s.state") as store:
        store.append_many([same.to_json(), differ.to_json()])
    line = log.read_bytes().splitlines()[0]
    assert b'"text_escape":"surrogates"' in line
    back = find_round(log, 2)
    assert back is not None
    assert SideReply.from_json(back["v1"]).text == reply.text
    assert SideReply.from_json(back["v2"]).text == other.text


async def test_plain_json_answer_to_a_stream_is_the_reply(serve: Any) -> None:
    """Defect 11: it was logged as `stream-cut: stream ended after 0 characters`."""
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"choices": [{"text": "whole", "finish_reason": "stop"}],
                                  "usage": {"completion_tokens": 1}})
    reply = await ask(await serve(handler), stream=True)
    assert reply.error is None and reply.text == "whole" and reply.finish_reason == "stop"
    assert reply.extra["unstreamed"] is True and reply.ttft_ms is None


async def test_other_non_sse_answer_to_a_stream_is_not_a_stream(serve: Any) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(text="<html>maintenance</html>", content_type="text/html")
    reply = await ask(await serve(handler), stream=True)
    assert reply.error == "not-a-stream: content-type text/html, no SSE events"
    assert reply.text is None and not reply.replied
