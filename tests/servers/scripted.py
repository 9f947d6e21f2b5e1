"""A scriptable OpenAI-compatible server for the test suite (aiohttp, in-process or not).

In-process (tests use the ``scripted_server`` fixture of tests/conftest.py)::

    server = ScriptedServer(reply="hi\\nthere", delay_ms=20)
    await server.start()          # server.url == "http://127.0.0.1:PORT"
    server.per_chunk_ms = 5       # every option is a plain attribute, read per request
    await server.set_fault("http-503", times=2)   # or first=K, last=M; None clears
    server.requests[-1].headers["Authorization"]
    await server.stop()

Subprocess: ``python -m tests.servers.scripted --port 0 [flags]`` prints one line
``READY http://127.0.0.1:PORT`` once listening and runs until SIGTERM/SIGINT;
``spawn_scripted_process(**flags)`` starts it and ``reap_process(proc)`` ends it.
``GET /_scripted/state`` answers the counters (``count``, ``model_requests``, ``active``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import re
import signal
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from tests.servers.faults import (
    FAULTS,
    MB,
    Exchange,
    FaultPlan,
    Reply,
    json_response,
    respond,
)

DEFAULT_MODEL = "scripted-model"
REPO_ROOT = Path(__file__).resolve().parents[2]
ReplySource = str | Callable[[dict[str, Any]], str] | None
OPTIONS: tuple[str, ...] = (  # the plain attributes, also --flags of the CLI
    "model", "reply", "delay_ms", "per_chunk_ms", "chunk_chars", "wire_split",
    "finish_reason", "usage", "diverge_after", "salt", "diverge_mode", "huge_bytes",
    "drip_interval_s", "record", "models_fault",
)
_WORD = re.compile(r"\S+")
_API_PATHS = {"/v1/chat/completions": "chat", "/v1/completions": "completions",
              "/completion": "native"}
_VOCAB = ("alpha", "beta", "gamma", "delta", "café", "naïve", "日本", "語", "🙂", "x",
          "lorem", "ipsum", "dolor", "sit", "amet", "über", "—", "42", "λ", "end.")


def prompt_text(body: Mapping[str, Any]) -> str:
    """The prompt of a completions body, or the last user message of a chat body."""
    messages = body.get("messages")
    if isinstance(messages, list):
        for msg in reversed(messages):
            if isinstance(msg, dict) and msg.get("role") == "user":
                content = msg.get("content")
                if isinstance(content, list):
                    return "".join(p.get("text", "") for p in content if isinstance(p, dict))
                return content if isinstance(content, str) else ""
        return ""
    prompt = body.get("prompt", "")
    if isinstance(prompt, list):
        prompt = prompt[0] if prompt else ""
    return prompt if isinstance(prompt, str) else str(prompt)


def echo_reply(body: Mapping[str, Any]) -> str:
    """The default reply: deterministic, multi-line, derived from the prompt."""
    return f"Answer to: {prompt_text(body)[:40]}\nline two\nline three"


def lorem_reply(words: int) -> Callable[[Mapping[str, Any]], str]:
    """Replies of ``words`` words (some multi-byte), a pure function of the prompt."""

    def reply(body: Mapping[str, Any]) -> str:
        seed = hashlib.sha256(prompt_text(body).encode()).digest()
        picks = [_VOCAB[seed[i % len(seed)] % len(_VOCAB)] for i in range(words)]
        lines = [" ".join(picks[i:i + 8]) for i in range(0, len(picks), 8)]
        return "\n".join(lines)

    return reply


def cut_to_tokens(text: str, max_tokens: int | None) -> tuple[str, int, bool]:
    """Tokens are whitespace-separated words: (text cut to max_tokens, tokens, was_cut)."""
    words = list(_WORD.finditer(text))
    if max_tokens is None or len(words) <= max_tokens:
        return text, len(words), False
    if max_tokens <= 0:
        return "", 0, True
    return text[: words[max_tokens - 1].end()], max_tokens, True


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """A completion request as received; ``n`` is its number (1-based)."""

    n: int
    method: str
    path: str
    headers: Mapping[str, str]  # case-insensitive
    body: dict[str, Any]
    raw: bytes


class ScriptedServer:
    """An OpenAI-compatible server whose every reply is decided by its attributes."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, model: str = DEFAULT_MODEL,
                 reply: ReplySource = None, delay_ms: float = 0.0, per_chunk_ms: float = 0.0,
                 chunk_chars: int = 4, wire_split: int | None = None,
                 finish_reason: str | None = None, usage: str = "auto",
                 diverge_after: int | None = None, salt: str = " [diverged]",
                 diverge_mode: str = "append", huge_bytes: int = 10 * MB,
                 drip_interval_s: float = 1.0, record: bool = True,
                 models_fault: str | None = None, fault: str | None = None,
                 fault_times: int | None = None, fault_first: int | None = None,
                 fault_last: int | None = None) -> None:
        self.host, self.model, self.reply = host, model, reply
        self.delay_ms, self.per_chunk_ms, self.chunk_chars = delay_ms, per_chunk_ms, chunk_chars
        self.wire_split, self.finish_reason, self.usage = wire_split, finish_reason, usage
        self.diverge_after, self.salt, self.diverge_mode = diverge_after, salt, diverge_mode
        self.huge_bytes, self.drip_interval_s = huge_bytes, drip_interval_s
        self.record, self.models_fault = record, models_fault
        self.requests: list[RecordedRequest] = []
        self.count = 0  # completion requests received (numbered 1..count)
        self.model_requests = 0
        self.redirect_hits = 0
        self.active = 0  # handlers running right now
        self._port = port
        self._initial = (fault, fault_times, fault_first, fault_last)
        self.fault: FaultPlan | None = None  # read-only: change it with set_fault()
        self._runner: web.ServerRunner | None = None
        self._site: web.TCPSite | None = None
        self._closing = asyncio.Event()
        self._relisten: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self._port}"

    async def __aenter__(self) -> ScriptedServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self._runner = web.ServerRunner(web.Server(self._handle, access_log=None),
                                        shutdown_timeout=2.0)
        await self._runner.setup()
        await self._listen()
        fault, times, first, last = self._initial
        if fault is not None:
            await self.set_fault(fault, times=times, first=first, last=last)

    async def stop(self) -> None:
        """Stop: waiting handlers (hang, drip, delays) return at once; idempotent."""
        self._closing.set()
        if self._relisten is not None:
            self._relisten.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._relisten
        if self._runner is not None:
            runner, self._runner, self._site = self._runner, None, None
            await runner.cleanup()

    async def set_fault(self, name: str | None, *, times: int | None = None,
                        first: int | None = None, last: int | None = None,
                        for_s: float | None = None) -> None:
        """Fault the next ``times`` completion requests, or requests first..last,
        or (neither given) every one from now on; ``None`` clears.

        ``refuse`` stops listening (and closes open connections) until cleared, or for
        ``for_s`` seconds; it takes no request range.
        """
        if name is not None and name not in FAULTS:
            raise ValueError(f"unknown fault {name!r}; one of {', '.join(FAULTS)}")
        if name == "refuse" and (times, first, last) != (None, None, None):
            raise ValueError("refuse is not per request: use for_s or clear it")
        was_refusing = self.fault is not None and self.fault.name == "refuse"
        if name is None:
            self.fault = None
        elif times is not None:
            self.fault = FaultPlan(name, self.count + 1, self.count + times)
        else:
            self.fault = FaultPlan(name, self.count + 1 if first is None else first, last)
        if name == "refuse" and not was_refusing:
            await self._stop_listening()
        elif name != "refuse" and was_refusing:
            await self._listen()
        if name == "refuse" and for_s is not None:
            self._relisten = asyncio.create_task(self._clear_later(for_s))

    async def _clear_later(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        self._relisten = None
        await self.set_fault(None)

    async def _listen(self) -> None:
        assert self._runner is not None, "start() first"
        self._site = web.TCPSite(self._runner, self.host, self._port)
        await self._site.start()
        self._port = self._runner.addresses[-1][1]

    async def _stop_listening(self) -> None:
        if self._site is not None:
            await self._site.stop()
            self._site = None
        if self._runner is not None and self._runner.server is not None:
            for conn in self._runner.server.connections:
                conn.force_close()
        await asyncio.sleep(0.01)  # let idle keep-alive connections close

    def state(self) -> dict[str, Any]:
        plan = self.fault
        return {"count": self.count, "model_requests": self.model_requests,
                "active": self.active, "redirect_hits": self.redirect_hits,
                "fault": None if plan is None else
                {"name": plan.name, "first": plan.first, "last": plan.last}}

    def _exchange(self, request: web.BaseRequest, reply: Reply, stream: bool) -> Exchange:
        return Exchange(request, reply, stream, self.per_chunk_ms / 1000, self.wire_split,
                        self.huge_bytes, self.drip_interval_s, self._closing)

    def _text(self, body: dict[str, Any], n: int) -> str:
        src = self.reply
        text = src(body) if callable(src) else src if isinstance(src, str) else echo_reply(body)
        if self.diverge_after is not None and n > self.diverge_after:
            text = self.salt + text if self.diverge_mode == "prepend" else text + self.salt
        return text

    def _reply(self, api: str, n: int, body: dict[str, Any]) -> Reply:
        limit = body.get("max_tokens", body.get("max_completion_tokens", body.get("n_predict")))
        limit = limit if isinstance(limit, int) and not isinstance(limit, bool) else None
        text, tokens, cut = cut_to_tokens(self._text(body, n), limit)
        options = body.get("stream_options")
        return Reply(
            api, f"scripted-{n}", self.model, text,
            finish_reason=self.finish_reason or ("length" if cut else "stop"),
            prompt_tokens=len(_WORD.findall(prompt_text(body))), completion_tokens=tokens,
            usage_mode=self.usage, chunk_chars=self.chunk_chars,
            include_usage=isinstance(options, dict) and options.get("include_usage") is True,
        )

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        self.active += 1
        try:
            path, method = request.path, request.method
            api = _API_PATHS.get(path)
            if api is not None and method == "POST":
                return await self._complete(request, api)
            if path == "/v1/models" and method == "GET":
                self.model_requests += 1
                reply = Reply("models", "models", self.model, self.model)
                return await self._answer(request, reply, False, self.models_fault)
            if path.startswith("/redirected/"):
                self.redirect_hits += 1
                return await self._redirected(request, path.removeprefix("/redirected"))
            if path == "/_scripted/state":
                return json_response(self.state())
            error = {"message": f"no route for {method} {path}", "type": "not_found"}
            return json_response({"error": error}, status=404)
        finally:
            self.active -= 1

    async def _answer(self, request: web.BaseRequest, reply: Reply, stream: bool,
                      fault: str | None) -> web.StreamResponse:
        ex = self._exchange(request, reply, stream)
        if self.delay_ms and not await ex.pause(self.delay_ms / 1000):
            return web.Response(status=204)  # the client left during the delay
        return await respond(ex, fault)

    async def _complete(self, request: web.BaseRequest, api: str) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict):
            error = {"message": "request body is not a JSON object", "type": "invalid_request"}
            return json_response({"error": error}, status=400)
        self.count += 1
        n = self.count
        if self.record:
            self.requests.append(RecordedRequest(n, request.method, request.path,
                                                 request.headers, body, raw))
        plan = self.fault
        fault = plan.name if plan is not None and plan.covers(n) else None
        return await self._answer(request, self._reply(api, n, body),
                                  body.get("stream") is True, fault)

    async def _redirected(self, request: web.BaseRequest, target: str) -> web.StreamResponse:
        """Where ``redirect`` points: a normal reply, so a client that follows is caught."""
        await request.read()
        api = _API_PATHS.get(target)
        reply = self._reply(api, 0, {}) if api else Reply("models", "", self.model, self.model)
        return await respond(self._exchange(request, reply, False), None)


_FLAGS: tuple[tuple[str, type, Any], ...] = (  # flag, type, default
    ("--host", str, "127.0.0.1"), ("--port", int, 0), ("--model", str, DEFAULT_MODEL),
    ("--reply", str, ""), ("--words", int, 60), ("--delay-ms", float, 0.0),
    ("--per-chunk-ms", float, 0.0), ("--drip-interval-s", float, 1.0), ("--chunk-chars", int, 4),
    ("--wire-split", int, None), ("--finish-reason", str, None), ("--diverge-after", int, None),
    ("--salt", str, " [diverged]"), ("--huge-bytes", int, 10 * MB), ("--fault-times", int, None),
    ("--fault-first", int, None), ("--fault-last", int, None),
)
_CHOICES: dict[str, tuple[str | None, ...]] = {  # first choice is the default
    "--reply-mode": ("echo", "fixed", "lorem"), "--usage": ("auto", "chunk", "final", "none"),
    "--diverge-mode": ("append", "prepend"), "--fault": (None, *FAULTS),
    "--models-fault": (None, *FAULTS),
}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """Flags mirror the constructor options; --reply-mode fixed uses --reply, lorem --words."""
    p = argparse.ArgumentParser(prog="python -m tests.servers.scripted", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag, kind, default in _FLAGS:
        p.add_argument(flag, type=kind, default=default)
    for flag, choices in _CHOICES.items():
        p.add_argument(flag, choices=[c for c in choices if c], default=choices[0])
    p.add_argument("--record", action="store_true", help="keep every request (memory grows)")
    return p.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.fault == "refuse":  # a bound port that never listens: connections are refused
        with socket.socket() as sock:
            sock.bind((args.host, args.port))
            print(f"READY http://{args.host}:{sock.getsockname()[1]}", flush=True)
            await stop.wait()
        return
    options = {k: getattr(args, k) for k in OPTIONS if k not in ("reply",)}
    reply: ReplySource = {"echo": None, "fixed": args.reply,
                          "lorem": lorem_reply(args.words)}[args.reply_mode]
    server = ScriptedServer(host=args.host, port=args.port, reply=reply, fault=args.fault,
                            fault_times=args.fault_times, fault_first=args.fault_first,
                            fault_last=args.fault_last, **options)
    await server.start()
    print(f"READY {server.url}", flush=True)
    await stop.wait()
    await server.stop()


def main(argv: list[str] | None = None) -> int:
    asyncio.run(_serve(_parse(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
