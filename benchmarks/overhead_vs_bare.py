"""Harness overhead vs a bare aiohttp request to the same loopback server.

Usage: python benchmarks/overhead_vs_bare.py [--requests 600]   (from the repository root)

Interleaves requests: ``SideClient.complete`` (ours: request build, SSE parsing, error
mapping, timing) and a bare aiohttp POST that reads the raw body, against the scripted
server answering after 20 ms. The p50 difference is what the harness itself adds on top
of the HTTP exchange. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import orjson
from tests.conftest import reap_process, spawn_scripted_process

from shadow_burnin.core.prompt import Prompt
from shadow_burnin.io.http.client import Endpoint, RequestSpec, SideClient


async def compare(url: str, stream: bool, requests: int) -> None:
    prompt = Prompt(id="a", category="c", prompt="hello there")
    spec = RequestSpec(api="completions", stream=stream, max_tokens=16)
    body = orjson.dumps({"model": "m", "prompt": "hello there", "max_tokens": 16,
                         "temperature": 0, "stream": stream})
    ours: list[float] = []
    bare: list[float] = []
    async with SideClient(Endpoint(url, model="m"), spec) as client, \
            aiohttp.ClientSession() as session:
        for i in range(requests):
            if i % 2:
                ours.append((await client.complete(prompt)).latency_ms or 0.0)
                continue
            t0 = time.perf_counter()
            async with session.post(url + "/v1/completions", data=body,
                                    headers={"Content-Type": "application/json"}) as resp:
                await resp.read()
            bare.append((time.perf_counter() - t0) * 1000)
    ours, bare = ours[50:], bare[50:]  # warm-up
    a, b = statistics.median(ours), statistics.median(bare)
    print(f"stream={stream}: ours p50 {a:.2f} ms, bare aiohttp p50 {b:.2f} ms, "
          f"harness adds {a - b:+.2f} ms")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=600)
    args = ap.parse_args()
    url, proc = spawn_scripted_process(delay_ms=20)
    try:
        for stream in (False, True):
            asyncio.run(compare(url, stream, args.requests))
    finally:
        reap_process(proc)


if __name__ == "__main__":
    main()
