"""The demo pair's engines: start-up time and ms/token per side at max_tokens 32.

Usage: python benchmarks/demo_engines.py [--starts 3] [--prompts 10] [--max-tokens 32]

Starts v1 = llama.cpp's C++ server (xllamacpp) and v2 = mistral.rs behind the front,
each alone, ``--starts`` times (spawn → ``/health`` 200, model cached, tokenizer cached),
then both together and sends the first ``--prompts`` demo prompts to each side in turn,
streamed, greedy, ``max_tokens`` 32: per request the latency, the time to the first
token, and ms per generated token after the first ((latency − TTFT) / (tokens − 1)).
Prints medians next to the references in /work/shared/facts/engines.md. Asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson
import urllib3

from shadow_burnin.app.demo import write_demo_prompts
from shadow_burnin.io.servers.gguf_tokenizer import ensure_tokenizer_json
from shadow_burnin.io.servers.llama_build import ensure_model
from shadow_burnin.io.servers.local import LocalServer, ServerPair
from shadow_burnin.io.servers.mistral_front import MistralSettings, mistral_front_server
from shadow_burnin.io.servers.xllama import xllama_server

REFERENCE = {"v1": "≈ 3.4 s to load (facts)", "v2": "7–12 s to load, ≈ 40 ms/token (facts)"}


def stream_once(http: urllib3.PoolManager, url: str, prompt: str, max_tokens: int
                ) -> tuple[float, float, int]:
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "cache_prompt": False, "repeat_penalty": 1.0}
    start = time.perf_counter()
    resp = http.request("POST", f"{url}/v1/completions", body=orjson.dumps(body),
                        headers={"Content-Type": "application/json"}, preload_content=False)
    first = None
    tokens = 0
    for line in resp.stream(1 << 16):
        for part in line.split(b"\n"):
            if not part.startswith(b"data: ") or part == b"data: [DONE]":
                continue
            chunk = orjson.loads(part[6:])
            choices = chunk.get("choices")
            if first is None and choices and choices[0].get("text"):
                first = time.perf_counter()
            usage = chunk.get("usage")
            if usage:
                tokens = int(usage["completion_tokens"])
    end = time.perf_counter()
    resp.release_conn()
    return end - start, (first or end) - start, tokens


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--prompts", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--v2-threads", type=int, default=1, help="mistral.rs threads (rayon)")
    args = parser.parse_args()
    model = ensure_model()
    tok = ensure_tokenizer_json(model)
    logs = Path(tempfile.mkdtemp(prefix="demo-engines-"))

    def make(side: str) -> LocalServer:
        if side == "v1":
            return xllama_server(model, name="v1", log_path=logs / "v1.log")
        return mistral_front_server(model, MistralSettings(threads=args.v2_threads), name="v2",
                                    log_path=logs / "v2.log", tokenizer_json=tok)

    for side in ("v1", "v2"):
        times = []
        for _ in range(args.starts):
            server = make(side).start(timeout=300)
            times.append(server.started_in or 0.0)
            server.stop()
        print(f"{side} start-up: median {statistics.median(times):.2f} s "
              f"(runs {', '.join(f'{t:.2f}' for t in times)})   reference: {REFERENCE[side]}",
              flush=True)

    prompts = [orjson.loads(line)["prompt"] for line in
               write_demo_prompts(logs / "p.jsonl").read_bytes().splitlines()][:args.prompts]
    http = urllib3.PoolManager()
    with ServerPair(make("v1"), make("v2")).start(timeout=300) as pair:
        results: dict[str, list[tuple[float, float, int]]] = {"v1": [], "v2": []}
        for prompt in prompts:
            for side, server in (("v1", pair.v1), ("v2", pair.v2)):
                results[side].append(stream_once(http, server.url, prompt, args.max_tokens))
    for side, rows in results.items():
        lat = [r[0] * 1000 for r in rows]
        ttft = [r[1] * 1000 for r in rows]
        per = [(r[0] - r[1]) * 1000 / (r[2] - 1) for r in rows if r[2] > 1]
        print(f"{side}: max_tokens {args.max_tokens}, {len(rows)} prompts: latency p50 "
              f"{statistics.median(lat):.0f} ms, TTFT p50 {statistics.median(ttft):.0f} ms, "
              f"{statistics.median(per):.1f} ms/token after the first"
              f"   reference: {REFERENCE[side]}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
