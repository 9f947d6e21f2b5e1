"""Scoring a text on a server, three ways (I/O; the math is in ``core.ppl``).

- ``echo``: OpenAI completions with ``echo: true, logprobs: K, max_tokens: 1`` (vLLM,
  llama-cpp-python …): one request per window returns every prompt token's log
  probability and top-K. ``max_tokens: 1`` rather than 0: llama-cpp-python reads 0 as
  "until the context is full".
- ``llama``: llama.cpp's own server, which has no prompt log probabilities (its
  ``/v1/completions`` silently ignores ``echo``). The window is tokenized with
  ``/tokenize``, then every position is one ``/completion`` request: the prefix as token
  ids, ``n_predict: 1``, ``n_probs: K``, and a ``logit_bias`` of +100 on the actual next
  token so it is the one "generated"; llama.cpp reports its probability from the raw
  logits (``post_sampling_probs: false``), so the bias does not touch the figures. With
  ``cache_prompt`` each request evaluates one new token.
- ``endpoint``: a custom ``POST /ppl {"text","stride","max_tokens"}`` answering
  ``{"perplexity","mean_nll","tokens"}`` (the earlier gen-2 server): a PPL, no per-token
  data, so nothing to pair.

Windows are cut once, from the token ids of a reference tokenizer (the first side that
offers ``/tokenize`` + ``/detokenize``, ``/extras/…`` on llama-cpp-python), and every
side is sent the same window texts. In each window the first token is not scored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp
import msgspec
import orjson

from shadow_burnin.core.ppl import TokenScore, windows
from shadow_burnin.core.structs import repr_without, shown_fields
from shadow_burnin.errors import ShadowBurninError

FORCE_BIAS = 100.0


class PplError(ShadowBurninError):
    """A server could not be scored (unreachable, refused, unexpected answer): one line,
    exit 2, like every error the harness raises."""

    def __init__(self, message: str) -> None:
        self.detail = message
        super().__init__(f"ppl failed: {message}")


_HIDDEN = frozenset({"api_key"})


class PplSide(msgspec.Struct, frozen=True):
    name: str
    url: str
    method: str = "auto"
    endpoint: str = "/ppl"
    model: str | None = None
    api_key: str | None = None  # the secret itself: not in repr
    insecure: bool = False

    def __repr__(self) -> str:  # never shows the api key
        return repr_without(self, _HIDDEN)

    def __rich_repr__(self) -> list[tuple[str, Any]]:
        return list(shown_fields(self, _HIDDEN))


class ScoringClient:
    """One side: detection, tokenization and window scoring over one HTTP session."""

    def __init__(self, side: PplSide, top_k: int, timeout_s: float) -> None:
        self.side = side
        self.top_k = top_k
        self.timeout_s = timeout_s
        self.requests = 0
        self.method = side.method
        self._session: aiohttp.ClientSession | None = None
        self._headers = {"Content-Type": "application/json"}
        if side.api_key:
            self._headers["Authorization"] = f"Bearer {side.api_key}"

    async def __aenter__(self) -> ScoringClient:
        connector = aiohttp.TCPConnector(ssl=not self.side.insecure)
        self._session = aiohttp.ClientSession(connector=connector,
                                              timeout=aiohttp.ClientTimeout(total=None))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    # -- HTTP ---------------------------------------------------------------------
    async def _call(self, method: str, path: str, body: Any = None,
                    ok_only: bool = True) -> tuple[int, Any]:
        assert self._session is not None
        url = self.side.url.rstrip("/") + path
        data = None if body is None else orjson.dumps(body)
        self.requests += 1
        try:
            async with asyncio.timeout(self.timeout_s), self._session.request(
                    method, url, data=data, headers=self._headers) as resp:
                raw = await resp.read()
                status = resp.status
        except TimeoutError:
            raise PplError(f"{self.side.name}: {path}: no answer within "
                           f"{self.timeout_s:g} s") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise PplError(f"{self.side.name}: {path}: {type(exc).__name__}: {exc}") from None
        try:
            payload = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            payload = None
        if ok_only and status != 200:
            detail = raw[:200].decode("utf-8", "replace")
            raise PplError(f"{self.side.name}: {path}: HTTP {status}: {detail}")
        return status, payload

    # -- detection ------------------------------------------------------------------
    async def detect(self) -> str:
        """Pick the method: llama.cpp (``/props``), else echo, else the custom endpoint."""
        if self.method != "auto":
            return self.method
        status, props = await self._call("GET", "/props", ok_only=False)  # unreachable: raise
        if status == 200 and isinstance(props, dict) and \
                "default_generation_settings" in props:
            self.method = "llama"
            return self.method
        echo_refused = ""
        try:
            if await self._echo("Hello world."):  # short: echo can be slow (see notes)
                self.method = "echo"
                return self.method
        except PplError as exc:
            echo_refused = f" ({exc})"  # e.g. the mistral.rs front says why it cannot
        status, answer = await self._try("POST", self.side.endpoint,
                                         {"text": "Hello, world.", "stride": 8,
                                          "max_tokens": 8})
        if status == 200 and isinstance(answer, dict) and "perplexity" in answer:
            self.method = "endpoint"
            return self.method
        raise PplError(f"{self.side.name}: no way to score text: not llama.cpp (/props), "
                       f"no completions echo with logprobs{echo_refused}, no "
                       f"{self.side.endpoint}; set [ppl] v1_method/v2_method")

    async def _try(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        try:
            return await self._call(method, path, body, ok_only=False)
        except PplError:
            return 0, None

    # -- tokenizer ------------------------------------------------------------------
    async def tokenizer(self) -> tuple[Callable[[str], Any], Callable[[list[int]], Any]] | None:
        """(tokenize, detokenize) coroutines if this server offers them, else None."""
        probe = "Hello, world."
        for tok_path, detok_path in (("/tokenize", "/detokenize"),
                                     ("/extras/tokenize", "/extras/detokenize")):
            status, got = await self._try("POST", tok_path, _tok_body(probe))
            if status == 200 and isinstance(got, dict) and isinstance(got.get("tokens"), list):
                bos = await self._bos(tok_path)

                async def tokenize(text: str, path: str = tok_path, drop: int = bos
                                   ) -> list[int]:
                    _, answer = await self._call("POST", path, _tok_body(text))
                    ids = [t["id"] if isinstance(t, dict) else int(t)
                           for t in answer["tokens"]]
                    return ids[drop:]

                async def detokenize(ids: list[int], path: str = detok_path) -> str:
                    _, answer = await self._call("POST", path, {"tokens": ids})
                    for key in ("content", "text", "prompt"):
                        if isinstance(answer, dict) and isinstance(answer.get(key), str):
                            return answer[key]
                    raise PplError(f"{self.side.name}: {path}: unexpected answer")

                return tokenize, detokenize
        return None

    async def _bos(self, path: str) -> int:
        """Tokens a tokenize endpoint puts before any text (llama-cpp-python adds BOS)."""
        _, got = await self._call("POST", path, _tok_body(""))
        return len(got["tokens"]) if isinstance(got, dict) else 0

    # -- scoring --------------------------------------------------------------------
    async def score(self, text: str) -> list[TokenScore]:
        if self.method == "echo":
            return await self._echo(text)
        if self.method == "llama":
            return await self._llama(text)
        raise PplError(f"{self.side.name}: method {self.method} gives no per-token scores")

    async def _echo(self, text: str) -> list[TokenScore]:
        body: dict[str, Any] = {"prompt": text, "echo": True, "logprobs": self.top_k,
                                "max_tokens": 1, "temperature": 0}
        if self.side.model:
            body["model"] = self.side.model
        _, answer = await self._call("POST", "/v1/completions", body)
        try:
            choice = answer["choices"][0]
            lp = choice["logprobs"]
            tokens, logprobs = lp["tokens"], lp["token_logprobs"]
            tops = lp.get("top_logprobs") or [None] * len(tokens)
        except (KeyError, IndexError, TypeError):
            raise PplError(f"{self.side.name}: /v1/completions did not echo the prompt's "
                           "log probabilities (echo unsupported?)") from None
        generated = (answer.get("usage") or {}).get("completion_tokens", 1)
        n = max(0, len(tokens) - int(generated or 0))
        offsets = lp.get("text_offset")
        out = []
        skip_first = offsets is None
        for i in range(n):
            if logprobs[i] is None or (offsets is not None and offsets[i] <= 0):
                continue  # BOS and the window's first token: not scored
            if skip_first:
                skip_first = False
                continue
            top = tops[i] if isinstance(tops[i], dict) else {}
            out.append(TokenScore(tokens[i], float(logprobs[i]),
                                  {str(k): float(v) for k, v in top.items()}))
        return out

    async def _llama(self, text: str) -> list[TokenScore]:
        _, with_bos = await self._call("POST", "/tokenize",
                                       {"content": text, "add_special": True})
        _, bare = await self._call("POST", "/tokenize", {"content": text, "add_special": False})
        ids = [t["id"] if isinstance(t, dict) else int(t) for t in with_bos["tokens"]]
        start = len(ids) - len(bare["tokens"]) + 1  # after BOS and the first text token
        out = []
        for i in range(start, len(ids)):
            body = {"prompt": ids[:i], "n_predict": 1, "n_probs": self.top_k,
                    "temperature": 0, "cache_prompt": True, "post_sampling_probs": False,
                    "logit_bias": [[ids[i], FORCE_BIAS]]}
            _, answer = await self._call("POST", "/completion", body)
            try:
                got = answer["completion_probabilities"][0]
                if got["id"] != ids[i]:
                    raise PplError(f"{self.side.name}: /completion did not take the forced "
                                   f"token {ids[i]} (got {got['id']})")
                top = {str(t["token"]): float(t["logprob"]) for t in got["top_logprobs"]}
                out.append(TokenScore(str(got["token"]), float(got["logprob"]), top))
            except (KeyError, IndexError, TypeError):
                raise PplError(f"{self.side.name}: /completion gave no n_probs log "
                               "probabilities (llama.cpp too old?)") from None
        return out

    async def endpoint_ppl(self, text: str, window: int) -> dict[str, Any]:
        _, answer = await self._call("POST", self.side.endpoint,
                                     {"text": text, "stride": window, "max_tokens": window})
        if not isinstance(answer, dict) or not isinstance(answer.get("perplexity"), int | float):
            raise PplError(f"{self.side.name}: {self.side.endpoint}: no perplexity in answer")
        return answer


def _tok_body(text: str) -> dict[str, Any]:
    # llama.cpp reads content/add_special, vLLM prompt/add_special_tokens,
    # llama-cpp-python input; each ignores the others
    return {"content": text, "prompt": text, "input": text, "add_special": False,
            "add_special_tokens": False}


async def window_texts(clients: list[ScoringClient], text: str, size: int,
                       max_windows: int | None) -> tuple[list[str], int, str]:
    """The window texts, the text's token count, and which side tokenized it."""
    for client in clients:
        if client.method == "endpoint":
            continue
        pair = await client.tokenizer()
        if pair is None:
            continue
        tokenize, detokenize = pair
        ids = await tokenize(text)
        spans = windows(len(ids), size)[:max_windows]
        return [await detokenize(ids[a:b]) for a, b in spans], len(ids), client.side.name
    raise PplError("no side offers /tokenize and /detokenize (or /extras/…): cannot cut "
                   "the text into token windows")
