"""mistral.rs (the ``mistralrs`` wheel, Rust) behind a small OpenAI-compatible HTTP front.

The wheel has no HTTP server, so this module gives it one (aiohttp), run in its own
process by ``python -m shadow_burnin.io.servers.serve_mistral``. The front adds no
semantics of its own; what it maps, exactly:

- **Engine**: ``mistralrs.Runner`` on the GGUF with a ``tokenizer.json`` built from the
  GGUF's own vocabulary (:mod:`.gguf_tokenizer`: mistral.rs misreads this file's
  tokenizer), ``max_seqs=1``, prefix cache off (a cached prefix would change what is
  evaluated, as llama.cpp's ``cache_prompt`` does), no seed (``seed=0`` raises; greedy
  needs none). Requests run one at a time (like llama.cpp with one slot): batching would
  put a request on another numeric path depending on what else is in flight.
- **Prompt → tokens**: the engine gets one chat message through an explicit raw-prompt
  template (``{{ bos_token }}`` + the message text), which yields exactly the token ids of
  the plain prompt with BOS — the ids mistral.rs's own ``CompletionRequest`` and llama.cpp
  use (tested). ``/v1/completions`` sends the prompt as that message: mistral.rs's
  completion request has neither ``stream`` nor ``logprobs``, its chat request has both.
  ``/v1/chat/completions`` renders the messages with ChatML first — the template llama.cpp
  falls back to for this template-less GGUF — so both servers see the same text.
- **Text**: mistral.rs strips the reply's leading whitespace from ``message.content``
  (``" the"`` → ``"the"``); the front puts back exactly the whitespace of the generated
  tokens' own bytes (the engine's logprob entries, always requested for that).
- **Request fields**: ``max_tokens``, ``temperature``, ``top_p``, ``top_k``, ``min_p``,
  ``stop`` (→ ``stop_seqs``), ``presence_penalty``, ``frequency_penalty``,
  ``repeat_penalty``/``repetition_penalty`` (→ ``repetition_penalty``), ``logit_bias``,
  ``stream``, ``logprobs``/``top_logprobs`` (completions: ``logprobs: K``), ``model``
  (echoed). Other fields (e.g. llama.cpp's ``cache_prompt``) are ignored. ``n`` > 1 and
  ``echo`` are refused with HTTP 400 (mistral.rs has no prompt logprobs, so no ``echo``).
- **Reply**: OpenAI shapes; ``logprobs`` in the chat-style ``content[]`` shape on both
  endpoints (as llama.cpp does): ``token`` text, ``logprob``, ``bytes``, and
  ``top_logprobs`` entries whose token ids (mistral.rs gives ids) are kept as ``id`` with
  the text from their bytes; ``usage`` from the engine's counts (a final usage chunk when
  streaming, then ``data: [DONE]``); ``finish_reason`` as the engine says it.
- ``/tokenize`` (``{"content", "add_special"}`` → ``{"tokens"}``) as llama.cpp has it,
  from the engine's own tokenizer; ``/health``, ``/v1/models``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgspec
import orjson
from aiohttp import web

from shadow_burnin.io.servers.llama_build import cache_dir
from shadow_burnin.io.servers.local import LocalServer

ENTRY = "shadow_burnin.io.servers.serve_mistral"
RAW_TEMPLATE = "{{ bos_token }}{% for message in messages %}{{ message['content'] }}{% endfor %}"
# the same without the BOS token: a deliberately broken front (the labelled benchmark)
RAW_TEMPLATE_NO_BOS = "{% for message in messages %}{{ message['content'] }}{% endfor %}"
WHEEL_HINT = "install the demo extra: pip install 'shadow-burnin[demo]' (wheel: mistralrs)"


class MistralSettings(msgspec.Struct, frozen=True):
    """What the mistral.rs side is told; ``threads`` sets ``RAYON_NUM_THREADS``.

    ``bos`` and ``space_prefix`` exist to break the front on purpose (the labelled
    benchmark's broken pairs): ``bos=False`` drops the BOS token from every prompt (a
    template without it and a tokenizer that does not add it: mistral.rs adds the
    tokenizer's BOS when the template has none),
    ``space_prefix=True`` tokenizes with SentencePiece's "dummy prefix" (a ``▁`` before
    the text) which this model was not trained with. The defaults are the correct front.
    """

    threads: int = 1
    alias: str | None = None  # the model id served (default: the file's stem)
    bos: bool = True
    space_prefix: bool | None = None  # None: what the GGUF says

    def label(self) -> str:
        """A short description for logs and reports."""
        parts = [f"mistral.rs {self.threads}t"]
        if not self.bos:
            parts.append("no BOS")
        if self.space_prefix is not None:
            parts.append(f"space prefix {'on' if self.space_prefix else 'off'}")
        return ", ".join(parts)


def raw_template_path(bos: bool = True) -> Path:
    """The raw-prompt jinja template (written once into the cache); ``bos=False``: the
    broken variant without the BOS token."""
    text = RAW_TEMPLATE if bos else RAW_TEMPLATE_NO_BOS
    path = cache_dir() / "templates" / ("raw-prompt.jinja" if bos else "raw-prompt-no-bos.jinja")
    if not path.is_file() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return path


def chatml(messages: list[dict[str, Any]]) -> str:
    """llama.cpp's ChatML fallback rendering, with the assistant turn opened."""
    parts = []
    for m in messages:
        content = m.get("content")
        if isinstance(content, list):  # [{"type": "text", "text": ...}]
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        parts.append(f"<|im_start|>{m.get('role', 'user')}\n{content or ''}<|im_end|>\n")
    return "".join(parts) + "<|im_start|>assistant\n"


class BadRequest(Exception):
    """A request the front refuses (HTTP 400)."""


# ------------------------------------------------------------------------------ engine


def _lead_ws(text: str) -> str:
    return text[: len(text) - len(text.lstrip())]


def _token_text(entry: Any) -> str:
    raw = getattr(entry, "bytes", None)
    if isinstance(raw, (bytes, bytearray, list)):
        return bytes(raw).decode("utf-8", "replace")
    return str(getattr(entry, "token", "") or "")


def restore_lead(content: str, token_texts: list[str]) -> str:
    """``content`` with the leading whitespace its generated tokens carry put back."""
    lead = _lead_ws("".join(token_texts))
    if lead and not content.startswith(lead):
        return lead + content.lstrip()
    return content


def logprob_entry(entry: Any, top: bool) -> dict[str, Any]:
    """One mistral.rs ``ResponseLogprob`` in the OpenAI chat-style shape."""
    raw = getattr(entry, "bytes", None)
    data = bytes(raw) if raw is not None else str(entry.token).encode()
    out: dict[str, Any] = {"token": str(entry.token), "logprob": float(entry.logprob),
                           "bytes": list(data)}
    if top:
        alts = []
        for alt in entry.top_logprobs or ():
            text = alt.bytes if isinstance(alt.bytes, str) else bytes(alt.bytes or b"").decode(
                "utf-8", "replace")
            alts.append({"id": int(alt.token), "token": text, "logprob": float(alt.logprob),
                         "bytes": list(text.encode())})
        out["top_logprobs"] = alts
    return out


def usage_dict(usage: Any) -> dict[str, int] | None:
    if usage is None:
        return None
    return {"prompt_tokens": int(usage.prompt_tokens),
            "completion_tokens": int(usage.completion_tokens),
            "total_tokens": int(usage.total_tokens)}


class Ask(msgspec.Struct):
    """A request in the front's terms: the raw prompt and the engine's sampling fields."""

    prompt: str
    top_logprobs: int | None  # None: no logprobs asked for
    stream: bool
    sampling: dict[str, Any]
    model: str


def parse_request(body: Any, *, chat: bool, alias: str) -> Ask:
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    if int(body.get("n") or 1) != 1:
        raise BadRequest("n: only 1 choice is supported")
    if body.get("echo"):
        raise BadRequest("echo: mistral.rs gives no prompt logprobs, so ppl cannot score "
                         "this server (README: ppl and mistral.rs)")
    prompt: Any
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("messages: a non-empty list is required")
        prompt = chatml(messages)
        top = body.get("top_logprobs") if body.get("logprobs") else None
        top = int(top or 0) if body.get("logprobs") else None
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise BadRequest("prompt: one string is required")
        lp = body.get("logprobs")
        top = None if lp in (None, False) else int(lp if lp is not True else 0)
    if top is not None and not 0 <= top <= 20:
        raise BadRequest("top_logprobs: 0..20")
    sampling: dict[str, Any] = {}
    for src, dst in (("max_tokens", "max_tokens"), ("temperature", "temperature"),
                     ("top_p", "top_p"), ("top_k", "top_k"), ("min_p", "min_p"),
                     ("presence_penalty", "presence_penalty"),
                     ("frequency_penalty", "frequency_penalty"),
                     ("repeat_penalty", "repetition_penalty"),
                     ("repetition_penalty", "repetition_penalty"),
                     ("logit_bias", "logit_bias")):
        if body.get(src) is not None:
            sampling[dst] = body[src]
    stop = body.get("stop")
    if stop is not None:
        sampling["stop_seqs"] = [stop] if isinstance(stop, str) else list(stop)
    if isinstance(sampling.get("logit_bias"), dict):
        sampling["logit_bias"] = {int(k): float(v) for k, v in sampling["logit_bias"].items()}
    return Ask(prompt, top, bool(body.get("stream")), sampling,
               str(body.get("model") or alias))


class Engine:
    """One ``mistralrs.Runner``; every call is serialised (one request at a time)."""

    def __init__(self, model: Path, tokenizer_json: Path, template: Path) -> None:
        from mistralrs import Runner, Which

        self.runner = Runner(
            which=Which.GGUF(quantized_model_id=str(model.parent),  # type: ignore[arg-type]
                             quantized_filename=model.name, tokenizer_json=str(tokenizer_json)),
            max_seqs=1, token_source="none", jinja_explicit=str(template), prefix_cache_n=0,
        )
        self._lock = threading.Lock()

    def request(self, ask: Ask) -> Any:
        from mistralrs import ChatCompletionRequest

        top = ask.top_logprobs
        return ChatCompletionRequest(
            messages=[{"role": "user", "content": ask.prompt}], model="default",
            logprobs=True, top_logprobs=top if top else None, stream=ask.stream,
            **ask.sampling)

    def run(self, ask: Ask) -> Any:
        with self._lock:
            return self.runner.send_chat_completion_request(self.request(ask))

    def stream(self, ask: Ask) -> Iterator[Any]:
        with self._lock:
            chunks: Iterator[Any] = self.runner.send_chat_completion_request(  # type: ignore[assignment]
                self.request(ask))
            yield from chunks

    def tokenize(self, text: str, add_special: bool) -> list[int]:
        with self._lock:
            return list(self.runner.tokenize_text(text, add_special, False))


# -------------------------------------------------------------------------------- HTTP


def _error(status: int, message: str, kind: str = "invalid_request_error") -> web.Response:
    return web.json_response({"error": {"message": message, "type": kind, "code": status}},
                             status=status, dumps=lambda o: orjson.dumps(o).decode())


def _json(data: Any) -> web.Response:
    return web.Response(body=orjson.dumps(data), content_type="application/json")


class Front:
    """The aiohttp application over one :class:`Engine`."""

    def __init__(self, engine: Engine, alias: str) -> None:
        self.engine = engine
        self.alias = alias

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/health", self.health)
        app.router.add_get("/v1/models", self.models)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/tokenize", self.tokenize)
        return app

    async def health(self, _: web.Request) -> web.Response:
        return _json({"status": "ok"})

    async def models(self, _: web.Request) -> web.Response:
        return _json({"object": "list", "data": [
            {"id": self.alias, "object": "model", "created": 0, "owned_by": "mistral.rs"}]})

    async def tokenize(self, request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
            text = body["content"]
            if not isinstance(text, str):
                raise TypeError
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return _error(400, "content: one string is required")
        ids = await asyncio.to_thread(self.engine.tokenize, text, bool(body.get("add_special")))
        return _json({"tokens": ids})

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, chat=False)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, chat=True)

    async def _serve(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        try:
            ask = parse_request(orjson.loads(await request.read()), chat=chat, alias=self.alias)
        except orjson.JSONDecodeError:
            return _error(400, "the body is not valid JSON")
        except (BadRequest, ValueError, TypeError) as exc:
            return _error(400, str(exc))
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        if ask.stream:
            return await self._stream(request, ask, chat=chat, rid=rid)
        try:
            res = await asyncio.to_thread(self.engine.run, ask)
        except Exception as exc:  # an engine failure is an answer, not a crash
            return _error(500, f"mistral.rs: {exc}", "server_error")
        return _json(self.reply(res, ask, chat=chat, rid=rid))

    def reply(self, res: Any, ask: Ask, *, chat: bool, rid: str) -> dict[str, Any]:
        choice = res.choices[0]
        entries = list(choice.logprobs.content) if choice.logprobs is not None else []
        text = restore_lead(choice.message.content or "", [_token_text(e) for e in entries])
        out: dict[str, Any] = {"index": 0, "finish_reason": choice.finish_reason}
        if chat:
            out["message"] = {"role": "assistant", "content": text}
        else:
            out["text"] = text
        out["logprobs"] = ({"content": [logprob_entry(e, ask.top_logprobs is not None)
                                        for e in entries]}
                           if ask.top_logprobs is not None else None)
        return {"id": rid, "object": "chat.completion" if chat else "text_completion",
                "created": int(time.time()), "model": ask.model, "choices": [out],
                "usage": usage_dict(res.usage)}

    async def _stream(self, request: web.Request, ask: Ask, *, chat: bool,
                      rid: str) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache"})
        await resp.prepare(request)
        created = int(time.time())
        kind = "chat.completion.chunk" if chat else "text_completion"
        seen_text = False
        usage = None
        try:
            async for chunk in _iterate(self.engine.stream(ask)):
                if chunk.usage is not None:
                    usage = usage_dict(chunk.usage)
                for choice in chunk.choices:
                    lp = choice.logprobs
                    content = choice.delta.content or ""
                    if not seen_text and lp is not None:
                        content = restore_lead(content, [_token_text(lp)])
                    seen_text = seen_text or bool(content.strip())
                    out: dict[str, Any] = {"index": 0, "finish_reason": choice.finish_reason}
                    if chat:
                        out["delta"] = {"role": "assistant", "content": content}
                    else:
                        out["text"] = content
                    out["logprobs"] = ({"content": [logprob_entry(lp, True)]}
                                       if ask.top_logprobs is not None and lp is not None
                                       else None)
                    await _send(resp, {"id": rid, "object": kind, "created": created,
                                       "model": ask.model, "choices": [out]})
            await _send(resp, {"id": rid, "object": kind, "created": created,
                               "model": ask.model, "choices": [], "usage": usage})
        except Exception as exc:  # mid-stream engine failure: an error event, then the end
            with contextlib.suppress(ConnectionError):
                await _send(resp, {"error": {"message": f"mistral.rs: {exc}",
                                             "type": "server_error", "code": 500}})
        with contextlib.suppress(ConnectionError):
            await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
        return resp


async def _send(resp: web.StreamResponse, data: dict[str, Any]) -> None:
    await resp.write(b"data: " + orjson.dumps(data) + b"\n\n")


_END = object()


async def _iterate(items: Iterator[Any]) -> AsyncIterator[Any]:
    """A blocking iterator run in a worker thread, consumed asynchronously."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()

    def pump() -> None:
        try:
            for item in items:
                loop.call_soon_threadsafe(queue.put_nowait, item)
        except BaseException as exc:
            loop.call_soon_threadsafe(queue.put_nowait, exc)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, _END)

    worker = threading.Thread(target=pump, name="mistralrs-stream", daemon=True)
    worker.start()
    while True:
        item = await queue.get()
        if item is _END:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


# ------------------------------------------------------------------------- the process


def mistral_front_server(
    model: Path,
    settings: MistralSettings | None = None,
    *,
    name: str = "mistral.rs",
    port: int | None = None,
    log_path: Path | None = None,
    tokenizer_json: Path | None = None,
) -> LocalServer:
    """mistral.rs behind the front, in its own process; not yet started.

    The ``tokenizer.json`` is built (cached) in the server process when not given.
    """
    import json
    import sys

    chosen = settings or MistralSettings()

    def build(port: int) -> list[str]:
        config = {"model": str(model), "port": port, "alias": chosen.alias or model.stem,
                  "tokenizer_json": str(tokenizer_json) if tokenizer_json else None,
                  "bos": chosen.bos, "space_prefix": chosen.space_prefix}
        return [sys.executable, "-m", ENTRY, json.dumps(config)]

    env = dict(os.environ)
    env["RAYON_NUM_THREADS"] = str(chosen.threads)
    env.setdefault("RUST_LOG", "warn")
    server = LocalServer(name, build, model, port=port, log_path=log_path, env=env,
                         kind="mistral.rs", ready_path="/health")
    server.settings = chosen  # type: ignore[attr-defined]
    return server
