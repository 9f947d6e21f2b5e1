"""A ``ppl`` run: both sides scored on the same windows, one after the other, and the
``ppl`` JSONL beside the log (one run per line; the gates read the last one)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec

from shadow_burnin.config import Config
from shadow_burnin.core.ppl import SidePpl, SideRun, TokenScore, paired, run_record, side_ppl
from shadow_burnin.errors import ConfigError
from shadow_burnin.inputs import TEXT_MAX_BYTES, check_input, read_input
from shadow_burnin.io.clock import now_iso
from shadow_burnin.io.log.pplstore import append_run, latest_run
from shadow_burnin.io.ppl.scoring import PplError, PplSide, ScoringClient, window_texts
from shadow_burnin.secrets import redact

DEFAULT_TEXT = "ppl-essay.txt"
Say = Callable[[str], None]


def load_text(path: str | None) -> tuple[str, dict[str, Any]]:
    """The text to score and its description (name, sha256) for the record."""
    if path is None:
        text = resources.files("shadow_burnin").joinpath("data", DEFAULT_TEXT).read_text(
            encoding="utf-8")
        name = f"builtin:{DEFAULT_TEXT}"
    else:
        if not check_input(path, ConfigError, "text"):
            raise ConfigError(path, "no such text file (ppl.text / --text)")
        raw = read_input(path, ConfigError, "text", max_bytes=TEXT_MAX_BYTES)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(path, "the text to score is not UTF-8") from None
        name = str(path)
    if not text.strip():
        raise ConfigError(path, "the text to score is empty")
    return text, {"name": name, "sha256": hashlib.sha256(text.encode()).hexdigest()[:16]}


class Measured(msgspec.Struct):
    record: dict[str, Any]
    scores: dict[str, list[TokenScore]] = msgspec.field(default_factory=dict)


async def measure(sides: list[PplSide], text: str, text_info: dict[str, Any], *,
                  window: int, top_k: int, max_windows: int | None, timeout_s: float,
                  ts: str, say: Say = lambda _m: None) -> Measured:
    """Score the text on every side, sequentially (no contention between the two)."""
    clients = [ScoringClient(s, top_k, timeout_s) for s in sides]
    for c in clients:
        await c.__aenter__()
    try:
        for c in clients:
            method = await c.detect()
            say(f"{c.side.name}: method {method} ({c.side.url})")
        notes: list[str] = []
        texts: list[str] = []
        n_tokens = 0
        if any(c.method != "endpoint" for c in clients):
            texts, n_tokens, ref = await window_texts(clients, text, window, max_windows)
            say(f"{n_tokens} tokens ({ref}'s tokenizer): {len(texts)} window(s) of ≤ {window}")
            if n_tokens < window:
                notes.append(f"the text has {n_tokens} tokens, less than one window")
        runs: dict[str, SideRun] = {}
        scores: dict[str, list[TokenScore]] = {}
        for c in clients:
            c.requests = 0
            start = time.perf_counter()
            if c.method == "endpoint":
                answer = await c.endpoint_ppl(text, window)
                mean = answer.get("mean_nll")
                result = SidePpl(int(answer.get("tokens") or 0),
                                 float(mean) if isinstance(mean, int | float) else None,
                                 float(answer["perplexity"]))
                notes.append(f"{c.side.name}: custom endpoint: PPL only, nothing to pair")
            else:
                got: list[TokenScore] = []
                for i, chunk in enumerate(texts, 1):
                    t = time.perf_counter()
                    got.extend(await c.score(chunk))
                    say(f"{c.side.name}: window {i}/{len(texts)} scored in "
                        f"{time.perf_counter() - t:.1f} s")
                scores[c.side.name] = got
                result = side_ppl([s.logprob for s in got])
            runs[c.side.name] = SideRun(c.side.url, c.method, result,
                                        time.perf_counter() - start, c.requests)
        pair = None
        if "v1" in scores and "v2" in scores:
            pair = paired(scores["v1"], scores["v2"])
            if pair is None:
                notes.append("the sides scored different token sequences (another "
                             "tokenizer?): no paired figures")
            elif pair.mismatched:
                notes.append(f"{pair.mismatched} position(s) with different tokens "
                             "left out of the paired figures")
        info = dict(text_info, tokens=n_tokens)
        record = run_record(ts, info, window, top_k, len(texts), runs, pair, notes)
        return Measured(record, scores)
    finally:
        for c in clients:
            await c.__aexit__(None, None, None)


__all__ = ["Measured", "PplError", "append_run", "latest_run", "load_text", "measure"]


def run_for(cfg: Config, *, save: bool, say: Say) -> tuple[dict[str, Any], Path | None]:
    """``ppl``: the ``[ppl]`` text scored on both sides of ``cfg`` (a ``Config``), the run
    appended to the ``ppl`` JSONL beside the log unless ``save`` is false. The JSONL is
    refused before any request; a server that cannot be scored is a ``PplError`` (one
    line, exit 2) with anything it echoed redacted against the keys in use. Returns the
    run's record and the file it was appended to (None: not saved)."""
    from shadow_burnin.app.burnin import api_key, known_secrets
    from shadow_burnin.app.files import check_ppl_log

    ppl_log = check_ppl_log(cfg) if save else None
    p = cfg.ppl
    text, info = load_text(p.text)
    sides = [PplSide(name, sc.url, getattr(p, f"{name}_method"),
                     getattr(p, f"{name}_endpoint"), sc.model,
                     api_key(sc.api_key_env, name), cfg.run.insecure)
             for name, sc in (("v1", cfg.v1), ("v2", cfg.v2))]
    keys = known_secrets(cfg)
    try:
        measured = asyncio.run(measure(sides, text, info, window=p.window, top_k=p.top_k,
                                       max_windows=p.max_windows, timeout_s=p.timeout,
                                       ts=now_iso(), say=lambda m: say(redact(m, keys))))
    except PplError as exc:
        raise PplError(redact(exc.detail, keys)) from None
    if ppl_log is not None:
        append_run(ppl_log, measured.record)
    return measured.record, ppl_log
