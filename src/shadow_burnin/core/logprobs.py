"""Servers' logprob shapes → one normalized token list (``core.verdict.Token``).

Shapes read (each has a test with a captured sample in tests/core/test_logprobs.py):

``content``  ``{"content": [{"token", "logprob", "bytes"?, "top_logprobs": [...]}]}`` —
             OpenAI chat, vLLM chat, and llama.cpp's ``llama-server`` on *both*
             ``/v1/chat/completions`` and ``/v1/completions``;
``openai``   ``{"tokens": [...], "token_logprobs": [...], "top_logprobs": [{tok: lp}],
             "text_offset": [...]}`` — OpenAI's legacy completions, vLLM and
             llama-cpp-python's ``/v1/completions``;
``native``   a ``completion_probabilities`` list — llama.cpp's ``/completion`` with
             ``n_probs``: entries like ``content``'s, or ``prob``/``top_probs`` when the
             server was asked for ``post_sampling_probs``.

A streamed reply hands over a list of per-chunk objects; they are concatenated. Byte-level
tokens that make up one character: ``llama-server`` reports them as one entry (the whole
character's bytes, the *last* piece's logprob and top-K); llama-cpp-python reports each
piece with empty text and the same ``text_offset``, which are merged here the same way
(text taken from the reply through the offsets). Such entries are marked ``merged``.
OpenAI's ``bytes:\\xNN`` token spelling is read as bytes.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from typing import Any

from shadow_burnin.core.verdict import Alt, Token

SHAPES = {"content": "chat-style content[] list", "openai": "OpenAI completions "
          "tokens/token_logprobs/top_logprobs", "native": "llama.cpp completion_probabilities"}
_BYTES_TOKEN = re.compile(r"^bytes:((?:\\x[0-9a-fA-F]{2})+)$")


def shape_of(raw: Any) -> str | None:
    """Which shape ``raw`` is (``content`` / ``openai`` / ``native``), None if none."""
    parts = raw if isinstance(raw, list) else [raw]
    for part in parts:
        if isinstance(part, dict):
            if isinstance(part.get("content"), list):
                return "content"
            if isinstance(part.get("tokens"), list) and "token_logprobs" in part:
                return "openai"
            if "logprob" in part or "prob" in part:
                return "native"
            if isinstance(part.get("completion_probabilities"), list):
                return "native"
    return None


def parse(raw: Any, text: str | None = None) -> list[Token] | None:
    """Normalized tokens from a reply's logprobs; None when there are none to read.

    ``raw`` is a choice's ``logprobs`` object, a list of them (one per streamed chunk), or
    a native ``completion_probabilities`` list; ``text`` (the reply) lets byte pieces of
    the OpenAI shape be merged into characters.
    """
    shape = shape_of(raw)
    parts = raw if isinstance(raw, list) else [raw]
    if shape == "content":
        return [t for p in parts if isinstance(p, dict)
                for t in _entries(p.get("content") or [])]
    if shape == "openai":
        return _openai([p for p in parts if isinstance(p, dict)], text)
    if shape == "native":
        entries: list[Any] = []
        for p in parts:
            if isinstance(p, dict) and isinstance(p.get("completion_probabilities"), list):
                entries.extend(p["completion_probabilities"])
            else:
                entries.append(p)
        return _entries(entries)
    return None


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _logprob(entry: dict[str, Any]) -> float | None:
    if "logprob" in entry:
        return _num(entry["logprob"])
    prob = _num(entry.get("prob"))
    return None if prob is None else math.log(max(prob, 1e-45))


def _raw(entry: dict[str, Any], token: str) -> bytes | None:
    value = entry.get("bytes")
    if isinstance(value, list) and all(isinstance(b, int) and 0 <= b < 256 for b in value):
        return bytes(value)
    return _spelled_bytes(token)


def _spelled_bytes(token: str) -> bytes | None:
    m = _BYTES_TOKEN.match(token)
    return bytes.fromhex(m.group(1).replace("\\x", "")) if m else None


def _alt(entry: Any) -> Alt | None:
    if not isinstance(entry, dict):
        return None
    token = entry.get("token", entry.get("tok_str"))
    lp = _logprob(entry)
    if not isinstance(token, str) or lp is None:
        return None
    return Alt(token, lp, _raw(entry, token))


def _entries(entries: Sequence[Any]) -> list[Token]:
    out: list[Token] = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        token = entry.get("token", entry.get("content"))
        if not isinstance(token, str):
            continue
        top_raw = entry.get("top_logprobs", entry.get("top_probs", entry.get("probs")))
        top = tuple(a for a in map(_alt, top_raw if isinstance(top_raw, list) else [])
                    if a is not None)
        raw = _raw(entry, token)
        out.append(Token(token, _logprob(entry), raw, top, merged=_is_merged(raw, top)))
    return out


def _is_merged(raw: bytes | None, top: tuple[Alt, ...]) -> bool:
    """An entry holding several byte pieces: its alternatives are shorter byte pieces."""
    if raw is None or not top or any(a.raw == raw for a in top):
        return False
    return any(a.raw is not None and len(a.raw) < len(raw) and raw.endswith(a.raw)
               for a in top)


def _openai(parts: list[dict[str, Any]], text: str | None) -> list[Token]:
    tokens: list[Token] = []
    offsets: list[int | None] = []
    for part in parts:
        toks = part.get("tokens") or []
        lps = part.get("token_logprobs") or []
        tops = part.get("top_logprobs") or []
        offs = part.get("text_offset") or []
        for i, tok in enumerate(toks):
            if not isinstance(tok, str):
                continue
            top_map = tops[i] if i < len(tops) and isinstance(tops[i], dict) else {}
            top = tuple(Alt(k, v, _spelled_bytes(k)) for k, v in top_map.items()
                        if isinstance(k, str) and _num(v) is not None)
            top = tuple(sorted(top, key=lambda a: -a.logprob))
            lp = _num(lps[i]) if i < len(lps) else None
            tokens.append(Token(tok, lp, _spelled_bytes(tok), top))
            off = offs[i] if i < len(offs) else None
            offsets.append(off if isinstance(off, int) and not isinstance(off, bool) else None)
    return _merge_by_offset(tokens, offsets, text)


def _merge_by_offset(tokens: list[Token], offsets: list[int | None], text: str | None
                     ) -> list[Token]:
    """Runs of tokens at the same ``text_offset`` make one character: one entry for the
    run (text from the reply, the last piece's logprob and top-K), marked ``merged``."""
    if text is None or not tokens or any(o is None for o in offsets):
        return tokens
    offs = [int(o) for o in offsets if o is not None]  # none is None (checked above)
    if any(b < a for a, b in itertools.pairwise(offs)):
        return tokens
    if len(set(offs)) == len(offs):
        return tokens
    base = offs[0]
    out: list[Token] = []
    i = 0
    while i < len(tokens):
        j = i
        while j + 1 < len(tokens) and offs[j + 1] == offs[i]:
            j += 1
        if j == i:
            out.append(tokens[i])
        else:
            end = offs[j + 1] - base if j + 1 < len(tokens) else len(text)
            last = tokens[j]
            piece = text[offs[i] - base:end] or last.token
            out.append(Token(piece, last.logprob, None, last.top, merged=True))
        i = j + 1
    return out
