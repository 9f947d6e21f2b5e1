"""The harness's own overhead on a measured latency.

Usage: python benchmarks/overhead.py [--rounds 400] [--delay-ms 20] [--repeat 3]

Two loopback servers (separate processes, one per side) answer every completion after
exactly --delay-ms and record their own handling time per request: from handler entry
(headers parsed) to just before the last write (the body, or the final `[DONE]`); taken
after it, a server preempted right after send() would count its own delay against the
client (seen as negative overheads on a loaded machine). `shadow-burnin run`
(--interval 0, one round in flight, forensics off, model given) measures each side's
latency_ms; overhead = latency_ms - handling time, paired request by request. Printed per
mode (stream, non-stream): p50/p99 over all requests of a repeat (first 5 rounds dropped
as warm-up), then the median over the repeats. Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from aiohttp import web

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import reap_process  # noqa: E402
from tests.servers.faults import DONE, Reply, sse  # noqa: E402

TEXT = "The harness overhead is what it adds.\nSecond line, some more words to stream."
WARMUP = 5


async def serve(delay_s: float) -> None:
    """The loopback server: prints READY url; GET /_times returns and clears the times."""
    times: list[float] = []

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        t0 = time.perf_counter()
        if request.path == "/_times":
            out, times[:] = list(times), []
            return web.json_response(out)
        if request.path == "/v1/models":
            return web.json_response(Reply("models", "m", "m", "m").body())
        body = orjson.loads(await request.read())
        reply = Reply("chat", "o", "m", TEXT, completion_tokens=len(TEXT.split()))
        await asyncio.sleep(delay_s)
        if body.get("stream"):
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            for event in reply.events():
                await resp.write(sse(event))
            times.append((time.perf_counter() - t0) * 1000.0)
            await resp.write(DONE)
        else:
            resp = web.Response(body=orjson.dumps(reply.body()),
                                content_type="application/json")
            times.append((time.perf_counter() - t0) * 1000.0)
            await resp.prepare(request)
        await resp.write_eof()
        return resp

    runner = web.ServerRunner(web.Server(handle, access_log=None))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(f"READY http://127.0.0.1:{runner.addresses[0][1]}", flush=True)
    await asyncio.Event().wait()


def start_server(delay_ms: float) -> tuple[str, subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, __file__, "--serve", "--delay-ms", str(delay_ms)],
                            stdout=subprocess.PIPE, start_new_session=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if not line.startswith("READY "):
        reap_process(proc)
        raise RuntimeError(f"server did not start: {line!r}")
    return line.split()[1], proc


def fetch_times(url: str) -> list[float]:
    import urllib.request

    with urllib.request.urlopen(url + "/_times", timeout=30) as resp:
        return list(orjson.loads(resp.read()))


def one_repeat(work: Path, urls: list[str], rounds: int, stream: bool) -> np.ndarray:
    log = work / f"o-{time.monotonic_ns()}.jsonl"
    argv = [sys.executable, "-m", "shadow_burnin", "run", "--v1", urls[0], "--v2", urls[1],
            "--model", "m", "--interval", "0", "--rounds", str(rounds), "--aa-every", "0",
            "--refire", "0", "--logprobs", "0", "--log", str(log), "--prompts",
            str(work / "p.jsonl"), "--quiet", "--stream" if stream else "--no-stream"]
    for url in urls:
        fetch_times(url)  # clear
    subprocess.run(argv, check=True, capture_output=True, timeout=600)
    records = [r for r in map(orjson.loads, log.read_bytes().splitlines())
               if r.get("kind", "round") == "round"]
    overheads: list[float] = []
    for side, url in zip(("v1", "v2"), urls, strict=True):
        server = fetch_times(url)
        measured = [r[side]["latency_ms"] for r in records]
        assert len(server) == len(measured) == rounds, (len(server), len(measured))
        assert all(r[side]["error"] is None for r in records)
        overheads += [m - s for m, s in zip(measured, server, strict=True)][WARMUP:]
    return np.array(overheads)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=400)
    ap.add_argument("--delay-ms", type=float, default=20.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        asyncio.run(serve(args.delay_ms / 1000.0))
        return 0
    print(f"load before: {os.getloadavg()}; cores: {os.cpu_count()}; server delay "
          f"{args.delay_ms:g} ms; {args.rounds} rounds x {args.repeat} repeats per mode")
    servers = [start_server(args.delay_ms) for _ in range(2)]
    urls = [u for u, _ in servers]
    summary: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows = [orjson.dumps({"id": f"p{i}", "category": "c", "prompt": f"overhead {i}"})
                for i in range(8)]
        (work / "p.jsonl").write_bytes(b"\n".join(rows) + b"\n")
        try:
            for stream in (True, False):
                mode = "stream" if stream else "non-stream"
                p50s, p99s = [], []
                for i in range(args.repeat):
                    o = one_repeat(work, urls, args.rounds, stream)
                    p50, p99 = np.percentile(o, [50, 99])
                    p50s.append(p50)
                    p99s.append(p99)
                    print(f"  {mode} repeat {i + 1}: n={o.size} overhead p50 {p50:.2f} ms, "
                          f"p99 {p99:.2f} ms, min {o.min():.2f} ms, max {o.max():.2f} ms",
                          flush=True)
                summary[mode] = (statistics.median(p50s), statistics.median(p99s))
        finally:
            for _, proc in servers:
                reap_process(proc)
    for mode, (p50, p99) in summary.items():
        print(f"{mode}: overhead (measured latency - server handling) median over repeats: "
              f"p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    print(f"load after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
