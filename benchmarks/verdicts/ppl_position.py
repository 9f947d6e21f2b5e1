"""Teacher-forced: how far apart are v1 and v2 at each position of a long text?

Usage::

    python benchmarks/verdicts/ppl_position.py [--pairs flash-attn,rope-x2,…]
                                               [--tokens 1024] [--out DIR]

The ``ppl`` scorer (``io.ppl.scoring``, llama.cpp method: one forced token per request,
the prompt cached) scores the same long text (a built-in long-context document, ``--source``)
on v1 (the catalogue's xllamacpp server) and on each pair's v2, and prints, per band of
positions (the token's context length), the mean |Δ logprob| of the text's token, the
mean top-K KL estimate Σ p₁ (log p₁ − log p₂) over tokens in both top-Ks, and how often
the two top-1s differ. A wrong RoPE base rotates queries against keys by an angle that
grows with their distance, so its error should grow with the position; numeric noise
(flash attention, another engine) should not grow that way. Both servers keep the full
sliding-window cache (``swa_full``) and cache prompts, so each request evaluates one
token. Figures only; asserts nothing; writes ``DIR/ppl-position.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import math
import sys
import time
from pathlib import Path
from typing import Any

import msgspec
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pairs import BY_NAME, ServerSpec

from shadow_burnin.core.ppl import TokenScore
from shadow_burnin.io.log.sidecars import write_atomic
from shadow_burnin.io.ppl.scoring import PplSide, ScoringClient, window_texts
from shadow_burnin.io.servers.llama_build import ensure_model

BANDS = (0, 64, 256, 512, 768, 1024, 1536, 2048, 4096)


def text(source: int = 0) -> str:
    """The ``source``-th built-in long-context document (reading ones first)."""
    from shadow_burnin.prompts import load_builtin

    docs = sorted((p for p in load_builtin() if p.category.startswith("long-context")
                   and not p.is_chat and p.prompt), key=lambda p: (p.category, p.id))
    return str(docs[source % len(docs)].prompt)


def cached(spec: ServerSpec) -> ServerSpec:
    return dataclasses.replace(spec, xllama=msgspec.structs.replace(
        spec.xllama, swa_full=True, cache_prompt=True))


async def score(url: str, name: str, chunk: str) -> list[TokenScore]:
    async with ScoringClient(PplSide(name, url, method="llama"), 5, 600.0) as c:
        c.method = "llama"
        return await c.score(chunk)


async def window(url: str, body: str, size: int) -> str:
    async with ScoringClient(PplSide("v1", url, method="llama"), 5, 600.0) as c:
        c.method = "llama"
        texts, _, _ = await window_texts([c], body, size, 1)
        return texts[0]


def compare(s1: list[TokenScore], s2: list[TokenScore]) -> list[dict[str, Any]]:
    """Per band of positions: tokens, mean |Δlp|, mean top-K KL, top-1 disagreements."""
    out = []
    for lo, hi in itertools.pairwise(BANDS):
        d_lp, kls, diff = [], [], 0
        for pos in range(lo, min(hi, len(s1), len(s2))):
            a, b = s1[pos], s2[pos]
            if a.token != b.token:
                continue
            d_lp.append(abs(a.logprob - b.logprob))
            kl = sum(math.exp(lp) * (lp - b.top[t]) for t, lp in a.top.items() if t in b.top)
            kls.append(kl)
            if a.top and b.top and max(a.top, key=a.top.__getitem__) != \
                    max(b.top, key=b.top.__getitem__):
                diff += 1
        if d_lp:
            out.append({"from": lo, "to": hi, "tokens": len(d_lp),
                        "dlp_mean": sum(d_lp) / len(d_lp), "kl_mean": sum(kls) / len(kls),
                        "top1_differs": diff})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", default="flash-attn,rope-x2,rope-x1.1,rope-x1.01")
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--out", type=Path, default=Path("ppl-position"))
    ap.add_argument("--source", type=int, default=0,
                    help="which built-in long-context document to score (default 0)")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    model = ensure_model()
    pairs = [BY_NAME[n.strip()] for n in args.pairs.split(",")]
    results: dict[str, Any] = {}
    with cached(ServerSpec()).server(model, "v1", args.out / "v1.server.log") as v1:
        chunk = asyncio.run(window(v1.url, text(args.source), args.tokens))
        t0 = time.monotonic()
        s1 = asyncio.run(score(v1.url, "v1", chunk))
        print(f"v1: {len(s1)} tokens scored in {time.monotonic() - t0:.0f} s", flush=True)
        for pair in pairs:
            with cached(pair.v2).server(model, f"v2-{pair.name}",
                                        args.out / f"v2-{pair.name}.server.log") as v2:
                s2 = asyncio.run(score(v2.url, "v2", chunk))
            bands = compare(s1, s2)
            results[pair.name] = {"label": pair.label, "bands": bands}
            print(f"{pair.name} ({pair.label})", flush=True)
            for b in bands:
                print(f"  {b['from']:>4}–{b['to']:<4} {b['tokens']:>4} tokens  |Δlp| "
                      f"{b['dlp_mean']:.4f}  KL {b['kl_mean']:.5f}  top-1 differs "
                      f"{b['top1_differs']}", flush=True)
            write_atomic(args.out / "ppl-position.json",
                         orjson.dumps(results, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
