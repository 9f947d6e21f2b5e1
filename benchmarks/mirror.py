"""The mirror against Caddy's ``reverse_proxy``, side by side in the same run.

Usage: python benchmarks/mirror.py [--latency 600] [--throughput 3000] [--memory 100000]
(from the repository root; needs /usr/bin/caddy)

Starts, each in its own process on loopback ports: v1 and v2 (the scripted server,
instant), Caddy (``reverse_proxy`` to v1, admin off) and ``shadow-burnin mirror`` (v1,
v2 at sample 1.0, logging every round). Then:

1. latency: requests to v1 directly, through Caddy, through the mirror (two processes)
   and through a ``--single-process`` mirror, interleaved one by one; what each proxy
   adds at p50 and p99 (its percentile minus the direct one), non-streaming (total) and
   streaming (time to first byte and total);
2. requests/s: ``--concurrency`` clients against Caddy, both mirrors and a mirror at
   ``--sample 0`` (its client path alone), in turn, twice, against the instant v1 (a
   mirror at sample 1 also sends every request to v2 and logs it);
3. memory: a mirror whose shadow is dead (a closed port) takes ``--memory`` requests; its
   RSS (both of its processes) every tenth of the way; then the same single-process.

The load generator is one Python process (aiohttp): at the higher rates it is part of
what is measured, the same for both proxies. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import numpy as np
import orjson
from tests.conftest import reap_process, spawn_scripted_process

ROOT = Path(__file__).resolve().parents[1]
BODY = {"model": "m", "prompt": "hello there, how are you", "max_tokens": 16,
        "temperature": 0}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_caddy(v1: str, workdir: Path) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    upstream = v1.removeprefix("http://")
    config = {"admin": {"disabled": True}, "logging": {"logs": {"default": {"level": "ERROR"}}},
              "apps": {"http": {"servers": {"bench": {
                  "listen": [f"127.0.0.1:{port}"], "automatic_https": {"disable": True},
                  "routes": [{"handle": [{"handler": "reverse_proxy",
                                          "upstreams": [{"dial": upstream}],
                                          "flush_interval": -1}]}]}}}}}
    path = workdir / "caddy.json"
    path.write_text(json.dumps(config))
    proc = subprocess.Popen(["/usr/bin/caddy", "run", "--config", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env=dict(os.environ, HOME=str(workdir)))
    for _ in range(200):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return f"http://127.0.0.1:{port}", proc
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("caddy did not start")


def start_mirror(v1: str, v2: str, log: Path, sample: float = 1.0, *extra: str
                 ) -> tuple[str, subprocess.Popen[bytes]]:
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, "-m", "shadow_burnin", "mirror", "--listen", "127.0.0.1:0",
         "--v1", v1, "--v2", v2, "--log", str(log), "--quiet", "--max-queue", "10000",
         "--shadow-concurrency", "16", "--timeout", "10", "--grace", "5",
         "--sample", str(sample), *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, start_new_session=True)
    assert proc.stderr is not None
    for _ in range(300):
        if select.select([proc.stderr], [], [], 0.1)[0]:
            line = proc.stderr.readline().decode()
            if line.startswith("mirror listening on "):
                return line.split()[3], proc
            if not line:
                break
    proc.kill()
    raise RuntimeError("mirror did not start")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def one(session: aiohttp.ClientSession, url: str, body: bytes
              ) -> tuple[float, float]:
    """(time to first byte, total) in ms for one request."""
    t0 = time.perf_counter()
    async with session.post(url + "/v1/completions", data=body,
                            headers={"Content-Type": "application/json"}) as resp:
        first = None
        async for _chunk in resp.content.iter_any():
            if first is None:
                first = time.perf_counter()
        end = time.perf_counter()
    return ((first or end) - t0) * 1000, (end - t0) * 1000


async def latency(targets: dict[str, str], n: int, stream: bool) -> None:
    body = orjson.dumps(dict(BODY, stream=stream))
    samples: dict[str, list[tuple[float, float]]] = {k: [] for k in targets}
    async with aiohttp.ClientSession() as session:
        for i in range(n + 50):
            for name, url in targets.items():
                got = await one(session, url, body)
                if i >= 50:  # warm-up
                    samples[name].append(got)
    kinds = [("ttfb", 0), ("total", 1)] if stream else [("total", 1)]
    for label, idx in kinds:
        arr = {k: np.array([s[idx] for s in v]) for k, v in samples.items()}
        d50, d99 = (float(np.percentile(arr["direct"], q)) for q in (50, 99))
        line = [f"{'stream' if stream else 'plain '} {label:5}: direct p50 {d50:.2f} "
                f"p99 {d99:.2f} ms"]
        for name in [k for k in arr if k != "direct"]:
            p50, p99 = (float(np.percentile(arr[name], q)) for q in (50, 99))
            line.append(f"{name} adds p50 {p50 - d50:+.2f} p99 {p99 - d99:+.2f} ms")
        print(" | ".join(line), flush=True)


async def throughput(url: str, n: int, concurrency: int) -> float:
    body = orjson.dumps(BODY)
    left = n
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                async with session.post(url + "/v1/completions", data=body,
                                        headers={"Content-Type": "application/json"}) as r:
                    await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"status {r.status}")
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return n / (time.perf_counter() - t0)


def rss_mb(pid: int) -> float:
    """RSS of the mirror and of its shadow process (its children), MB."""
    pids = [pid, *map(int, Path(f"/proc/{pid}/task/{pid}/children").read_text().split())]
    total = 0.0
    for p in pids:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) / 1024
    return total


async def memory(url: str, pid: int, n: int, concurrency: int) -> list[float]:
    steps = [rss_mb(pid)]
    for _ in range(10):
        await throughput(url, n // 10, concurrency)
        steps.append(rss_mb(pid))
    return steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--latency", type=int, default=600)
    ap.add_argument("--throughput", type=int, default=3000)
    ap.add_argument("--memory", type=int, default=100_000)
    ap.add_argument("--concurrency", type=int, default=32)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sb-mirror-bench-"))
    v1, p1 = spawn_scripted_process(reply="Paris is the capital of France, and it is "
                                    "lovely in spring.", reply_mode="fixed",
                                    per_chunk_ms=0.5, chunk_chars=6)
    v2, p2 = spawn_scripted_process(reply="Paris is the capital of France, and it is "
                                    "lovely in spring.", reply_mode="fixed")
    procs = [p1, p2]
    try:
        caddy, pc = start_caddy(v1, work)
        procs.append(pc)
        mirrors = {  # name -> (sample, extra flags)
            "mirror": (1.0, ()), "mirror-1p": (1.0, ("--single-process",)),
            "mirror@0": (0.0, ()),
        }
        started = {name: start_mirror(v1, v2, work / f"{name}.jsonl", sample, *extra)
                   for name, (sample, extra) in mirrors.items()}
        procs.extend(proc for _url, proc in started.values())
        targets = {"direct": v1, "caddy": caddy,
                   **{name: url for name, (url, _proc) in started.items()}}
        version = subprocess.run(["/usr/bin/caddy", "version"], capture_output=True,
                                 text=True).stdout.split()[0]
        print(f"caddy {version}, load {os.getloadavg()[0]:.1f}; mirror: two processes, "
              "mirror-1p: --single-process, mirror@0: --sample 0", flush=True)
        for stream in (False, True):
            asyncio.run(latency({k: targets[k] for k in ("direct", "caddy", "mirror",
                                                         "mirror-1p")},
                                args.latency, stream))
        rates: dict[str, list[float]] = {"caddy": [], **{name: [] for name in mirrors}}
        for _ in range(2):
            for name in rates:
                rates[name].append(asyncio.run(throughput(targets[name], args.throughput,
                                                          args.concurrency)))
        c = statistics.mean(rates["caddy"])
        print(f"requests/s at concurrency {args.concurrency}, load "
              f"{os.getloadavg()[0]:.1f}: " + "; ".join(
                  f"{name} {', '.join(f'{r:.0f}' for r in got)}"
                  + ("" if name == "caddy" else f" ({statistics.mean(got) / c:.2f} of caddy)")
                  for name, got in rates.items()), flush=True)
        for name, (_url, proc) in started.items():
            stop(proc)
            procs.remove(proc)
            lines = len((work / f"{name}.jsonl").read_bytes().splitlines())
            print(f"{name} logged {lines} rounds", flush=True)
        dead = f"http://127.0.0.1:{free_port()}"
        for name, extra in (("mirror", ()), ("mirror-1p", ("--single-process",))):
            url, pm = start_mirror(v1, dead, work / f"dead-{name}.jsonl", 1.0, *extra)
            procs.append(pm)
            steps = asyncio.run(memory(url, pm.pid, args.memory, args.concurrency))
            print(f"{name} RSS over {args.memory} requests, dead shadow (MB, every tenth): "
                  f"{' '.join(f'{s:.1f}' for s in steps)}", flush=True)
            stop(pm)
            procs.remove(pm)
            rounds = (work / f"dead-{name}.jsonl").read_bytes().count(b"\n")
            print(f"{name} dead-shadow log: {rounds} rounds", flush=True)
    finally:
        for proc in procs:
            if proc in (p1, p2):
                reap_process(proc)
            else:
                stop(proc)


if __name__ == "__main__":
    main()
