"""A tiny fake language-model server with a known answer, for the ``ppl`` tests (aiohttp).

Tokens are words with their leading whitespace (``"The"``, ``" cat"``). At every position
the model gives the actual next token probability ``p`` and puts the rest on one other
token, ``" zzz"``: so the PPL is exactly ``1/p`` and the KL between two such models is
known in closed form. It speaks one of four dialects:

- ``echo``: OpenAI completions echo like llama-cpp-python (no BOS in the echo, the
  first token's logprob null); ``echo-bos``: like vLLM (the BOS echoed first);
- ``llama``: llama.cpp's server: ``/props``, ``/tokenize``, ``/detokenize`` and
  ``/completion`` with ``n_probs`` and ``logit_bias`` (its ``/v1/completions`` ignores
  ``echo``, as the real one does);
- ``endpoint``: only ``POST /ppl`` (the earlier gen-2 server);
- ``nothing``: 404 for everything.

``serve_in_thread`` runs one in a background thread for synchronous (CLI) tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import threading
from collections.abc import Iterator
from typing import Any

from aiohttp import web

BOS = "<bos>"
OTHER = " zzz"
_VOCAB: dict[str, int] = {BOS: 1, OTHER: 2}
_WORDS = re.compile(r"\s*\S+")


def token_id(piece: str) -> int:
    return _VOCAB.setdefault(piece, len(_VOCAB) + 1)


def piece_of(tid: int) -> str:
    return next(p for p, i in _VOCAB.items() if i == tid)


def pieces(text: str) -> list[str]:
    return _WORDS.findall(text)


class FakeLM:
    def __init__(self, dialect: str, p: float = 0.6) -> None:
        self.dialect, self.p = dialect, p
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def top(self, actual: str) -> dict[str, float]:
        return {actual: math.log(self.p), OTHER: math.log(1 - self.p)}

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else {}
        self.calls.append((request.path, body))
        route = (self.dialect, request.path)
        if route in (("echo", "/v1/completions"), ("echo-bos", "/v1/completions")):
            return web.json_response(self.echo(body))
        if self.dialect in ("echo", "echo-bos") and request.path == "/extras/tokenize":
            return web.json_response({"tokens": [1] + [token_id(t) for t in
                                                       pieces(body["input"])]})
        if self.dialect in ("echo", "echo-bos") and request.path == "/extras/detokenize":
            return web.json_response({"text": "".join(piece_of(i) for i in body["tokens"])})
        if self.dialect == "llama":
            return self.llama(request.path, body)
        if route == ("endpoint", "/ppl"):
            n = len(pieces(body["text"]))
            return web.json_response({"perplexity": 1 / self.p, "mean_nll": -math.log(self.p),
                                      "tokens": n})
        return web.json_response({"error": "not found"}, status=404)

    def echo(self, body: dict[str, Any]) -> dict[str, Any]:
        words = pieces(body["prompt"])
        bos = self.dialect == "echo-bos"
        tokens = ([BOS] if bos else []) + words + [OTHER]
        logprobs: list[float | None] = [None] + [math.log(self.p)] * (len(tokens) - 1)
        tops: list[dict[str, float] | None] = [None] + [self.top(t) for t in tokens[1:]]
        if not bos:  # llama-cpp-python: the first text token's logprob is null
            logprobs[0], tops[0] = None, None
        offsets, at = [], 0
        for t in tokens:
            offsets.append(at)
            at += 0 if t == BOS else len(t)
        return {"choices": [{"text": body["prompt"] + OTHER, "index": 0, "finish_reason": "length",
                             "logprobs": {"tokens": tokens, "token_logprobs": logprobs,
                                          "top_logprobs": tops, "text_offset": offsets}}],
                "usage": {"prompt_tokens": len(tokens) - 1, "completion_tokens": 1}}

    def llama(self, path: str, body: dict[str, Any]) -> web.Response:
        if path == "/props":
            return web.json_response({"default_generation_settings": {"n_ctx": 4096}})
        if path == "/tokenize":
            ids = [token_id(t) for t in pieces(body["content"])]
            return web.json_response({"tokens": ([1] if body.get("add_special") else []) + ids})
        if path == "/detokenize":
            return web.json_response({"content": "".join(piece_of(i) for i in body["tokens"])})
        if path == "/completion":
            forced = int(body["logit_bias"][0][0])
            actual = piece_of(forced)
            top = sorted(self.top(actual).items(), key=lambda kv: -kv[1])
            probs = {"id": forced, "token": actual, "logprob": math.log(self.p),
                     "top_logprobs": [{"id": token_id(t), "token": t, "logprob": v}
                                      for t, v in top][: body["n_probs"]]}
            return web.json_response({"content": actual, "completion_probabilities": [probs]})
        if path == "/v1/completions":  # ignores echo, like llama-server
            return web.json_response({"choices": [{"text": OTHER, "logprobs": {"content": []}}]})
        return web.json_response({"error": "not found"}, status=404)


async def start(lm: FakeLM) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", lm.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


@contextlib.contextmanager
def serve_in_thread(lm: FakeLM) -> Iterator[str]:
    """Run the fake server on its own loop in a thread; yields its URL."""
    loop = asyncio.new_event_loop()
    ready: dict[str, Any] = {}
    started = threading.Event()

    def main() -> None:
        asyncio.set_event_loop(loop)
        ready["runner"], ready["url"] = loop.run_until_complete(start(lm))
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    started.wait(10)
    try:
        yield ready["url"]
    finally:
        asyncio.run_coroutine_threadsafe(ready["runner"].cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
