"""``--api native``: llama.cpp's own ``/completion`` against the scripted server.

The real server's shape (recorded from llama-server 0.3.36's vendored build): a body with
``prompt``/``n_predict``/``n_probs``; a stream of ``{"content", "stop": false}`` events
ended by one ``"stop": true`` object with ``stop_type`` and ``tokens_predicted``, no
``[DONE]``. The real server itself is exercised in tests/e2e.
"""

from __future__ import annotations

from typing import Any

import pytest

from shadow_burnin.core.prompt import Message, Prompt
from shadow_burnin.io.http.client import Endpoint, RequestSpec, SideClient, build_body

TEXT = "Première réponse: é, 日本語, 🙂\nline two\n\nlast line"
PLAIN = Prompt(id="p1", category="test", prompt="The capital of France is")


async def ask(scripted_server: Any, prompt: Prompt = PLAIN, **spec: Any) -> tuple[Any, Any]:
    server = await scripted_server(reply=TEXT, record=True)
    async with SideClient(Endpoint(server.url), RequestSpec(api="native", **spec)) as client:
        reply = await client.complete(prompt)
    return reply, server


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("wire_split", [None, 1])
async def test_native_reply_is_read_whole(scripted_server: Any, stream: bool,
                                          wire_split: int | None) -> None:
    server = await scripted_server(reply=TEXT, record=True, wire_split=wire_split)
    async with SideClient(Endpoint(server.url), RequestSpec(api="native", stream=stream)) as c:
        reply = await c.complete(PLAIN)
    assert reply.error is None and reply.text == TEXT  # every line, not the first
    assert reply.finish_reason == "stop" and reply.completion_tokens == len(TEXT.split())
    assert (reply.ttft_ms is not None) == stream
    sent = server.requests[-1]
    assert sent.path == "/completion"
    assert sent.body["prompt"] == "The capital of France is" and sent.body["n_predict"] == 64
    assert "max_tokens" not in sent.body and sent.body["stream"] is stream


@pytest.mark.parametrize("stream", [True, False])
async def test_native_cut_by_n_predict_is_length(scripted_server: Any, stream: bool) -> None:
    reply, _ = await ask(scripted_server, max_tokens=3, stream=stream)
    assert reply.error is None and reply.finish_reason == "length"
    assert reply.completion_tokens == 3 and len(reply.text) < len(TEXT)


def test_native_body_asks_n_probs_and_flattens_messages() -> None:
    chat = Prompt(id="p2", category="t", messages=(Message("system", "Be brief."),
                                                   Message("user", "Hi")), max_tokens=7)
    body = build_body(RequestSpec(api="native", logprobs=5, extra={"cache_prompt": False}),
                      chat, "m")
    assert body["n_probs"] == 5 and "logprobs" not in body and body["n_predict"] == 7
    assert isinstance(body["prompt"], str) and "Be brief." in body["prompt"]
    assert body["cache_prompt"] is False and body["temperature"] == 0


async def test_native_stream_without_its_stop_event_is_cut(scripted_server: Any) -> None:
    server = await scripted_server(reply=TEXT)
    await server.set_fault("sse-cut", times=1)
    async with SideClient(Endpoint(server.url), RequestSpec(api="native")) as client:
        reply = await client.complete(PLAIN)
        assert reply.error is not None and reply.error.startswith("stream-cut")
        again = await client.complete(PLAIN)  # the same client goes on
    assert again.error is None and again.text == TEXT


@pytest.mark.parametrize("stream", [True, False])
async def test_native_null_content_is_bad_shape(scripted_server: Any, stream: bool) -> None:
    server = await scripted_server(reply=TEXT)
    await server.set_fault("null-content", times=1)
    async with SideClient(Endpoint(server.url), RequestSpec(api="native", stream=stream)) as c:
        reply = await c.complete(PLAIN)
    assert reply.error is not None and reply.error.startswith("bad-shape")
    assert reply.text is None
