"""The mirror against Caddy's ``reverse_proxy``, side by side in the same run.

Usage: python benchmarks/mirror.py [--latency 600] [--gap 5] [--rounds 5] [--seconds 5]
       [--memory 100000] [--reference-src DIR] [--no-pin]
       [--phases latency,rates,memory]   (run them in separate holds of the lock)
(from the repository root; needs /usr/bin/caddy; uses /usr/bin/wrk when installed)

Fairness on a small machine (2 cores here, shared): every proxy under test — Caddy, the
mirror's two processes, the single-process mirror — runs pinned to the same one CPU
(``taskset``; Go sizes GOMAXPROCS from that affinity, so Caddy gets one core, as the
mirror does), and everything else — the load generator, v1, v2 — on the other CPU.
``--no-pin`` lets the kernel place everything (then Caddy's goroutines use both cores
while the mirror's client path is one Python thread).

1. latency: requests to v1 (the scripted server, streaming 6-character chunks every
   0.5 ms) directly, through Caddy and through each mirror, interleaved one by one; what
   each proxy adds at p50 and p99 (its percentile minus the direct one), non-streaming
   (total) and streaming (time to first byte and total). After each request the load
   generator waits ``--gap`` ms (the same for every target) so that what a proxy does
   after a reply — the single-process mirror's shadow exchange, the two-process mirror's
   shadow process — is over before the next target's request starts (without it, that
   work lands on whichever target comes next in the interleaving);
2. requests/s: ``--rounds`` rounds, each running every proxy in turn for ``--seconds``
   with 32 connections (wrk, C, one thread; else an aiohttp client), against an instant
   v1 and v2 (a Caddy ``static_response`` on the other CPU); the median per proxy and its
   ratio to Caddy's median (and the ratio in each round);
   ``mirror-nice`` is the two-process mirror with its shadow process at nice 10
   (``--shadow-sched nice``, the default before ``SCHED_IDLE``); each mirror's share
   of requests logged as rounds is printed after the rounds (the rest were dropped when
   the shadow's queue was full, counted);
3. memory: a mirror whose shadow is dead (a closed port) takes ``--memory`` requests;
   its RSS (both of its processes) every tenth of the way; then the same single-process.

``--reference-src DIR``: also measure a mirror from another source tree (e.g. the
aiohttp-based client path before this one: ``git archive <commit> src | tar -x -C DIR``).
Prints figures; asserts nothing.
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


PROXY_CPU: list[str] = []  # taskset prefix for the proxies under test
OTHER_CPU: set[int] | None = None  # this process, the load generator, v1 and v2
INSTANT = orjson.dumps({"id": "c", "object": "text_completion", "created": 1, "model": "m",
                        "choices": [{"index": 0, "text": "Paris is the capital of France.",
                                     "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 5, "completion_tokens": 8}}).decode()


def start_caddy(v1: str | None, workdir: Path, name: str = "caddy",
                pin: bool = True) -> tuple[str, subprocess.Popen[bytes]]:
    """Caddy as ``reverse_proxy`` to ``v1``, or (``v1`` None) an instant completions
    server (``static_response``)."""
    port = free_port()
    handler: dict[str, object]
    if v1 is None:
        handler = {"handler": "static_response", "status_code": 200, "body": INSTANT,
                   "headers": {"Content-Type": ["application/json"]}}
    else:
        handler = {"handler": "reverse_proxy", "upstreams": [{"dial": v1.removeprefix(
            "http://")}], "flush_interval": -1}
    config = {"admin": {"disabled": True}, "logging": {"logs": {"default": {"level": "ERROR"}}},
              "apps": {"http": {"servers": {"bench": {
                  "listen": [f"127.0.0.1:{port}"], "automatic_https": {"disable": True},
                  "routes": [{"handle": [handler]}]}}}}}
    path = workdir / f"{name}.json"
    path.write_text(json.dumps(config))
    proc = subprocess.Popen([*(PROXY_CPU if pin else []), "/usr/bin/caddy", "run",
                             "--config", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env=dict(os.environ, HOME=str(workdir)))
    for _ in range(200):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return f"http://127.0.0.1:{port}", proc
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("caddy did not start")


def start_mirror(v1: str, v2: str, log: Path, sample: float = 1.0, *extra: str,
                 src: Path = ROOT / "src", env_extra: dict[str, str] | None = None
                 ) -> tuple[str, subprocess.Popen[bytes]]:
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               PYTHONPATH=str(src) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               **(env_extra or {}))
    proc = subprocess.Popen(
        [*PROXY_CPU, sys.executable, "-m", "shadow_burnin", "mirror", "--listen", "127.0.0.1:0",
         "--v1", v1, "--v2", v2, "--log", str(log), "--quiet", "--max-queue", "10000",
         "--shadow-concurrency", "64", "--timeout", "10", "--grace", "5",
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


async def latency(targets: dict[str, str], n: int, stream: bool, gap: float) -> None:
    body = orjson.dumps(dict(BODY, stream=stream))
    samples: dict[str, list[tuple[float, float]]] = {k: [] for k in targets}
    async with aiohttp.ClientSession() as session:
        for i in range(n + 50):
            for name, url in targets.items():
                got = await one(session, url, body)
                await asyncio.sleep(gap)
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
        c50, c99 = (float(np.percentile(arr["caddy"], q)) for q in (50, 99))
        print(f"  {label} minus caddy: " + "; ".join(
            f"{name} p50 {float(np.percentile(arr[name], 50)) - c50:+.2f} p99 "
            f"{float(np.percentile(arr[name], 99)) - c99:+.2f} ms"
            for name in arr if name not in ("direct", "caddy")), flush=True)


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


WRK_SCRIPT = """wrk.method = "POST"
wrk.body = '%s'
wrk.headers["Content-Type"] = "application/json"
"""


def wrk_rate(url: str, seconds: float, connections: int, workdir: Path) -> float:
    """Requests/s of wrk (one thread) on the load generator's CPU; non-2xx replies make
    the figure void (raises)."""
    script = workdir / "post.lua"
    script.write_text(WRK_SCRIPT % orjson.dumps(BODY).decode())
    out = subprocess.run(["/usr/bin/wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s",
                          "-s", str(script), url + "/v1/completions"],
                         capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors against {url}:\n{out}")
    return float(out.split("Requests/sec:")[1].split()[0])


def rate(url: str, seconds: float, connections: int, workdir: Path) -> float:
    if Path("/usr/bin/wrk").exists():
        return wrk_rate(url, seconds, connections, workdir)
    first = asyncio.run(throughput(url, 200, connections))  # sizes the run to ~seconds
    return asyncio.run(throughput(url, max(200, int(first * seconds)), connections))


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


def stats_of(log: Path) -> str:
    """The mirror's own counters, from the ``mirror-stats`` event it appended at its end."""
    events = [orjson.loads(line) for line in
              Path(str(log) + ".events.jsonl").read_bytes().splitlines()]
    last = [e for e in events if e.get("event") == "mirror-stats"][-1]
    p = last["proxy"]
    share = last["rounds"] / p["requests"] if p["requests"] else 0.0
    return (f"{share:.0%} of requests logged as rounds; "
            f"requests {p['requests']}, shadowed {p['mirrored']}, dropped (queue full) "
            f"{p['dropped_full']}, dropped at shutdown {p['dropped_shutdown']}, "
            f"v1 failed {p['v1_failed']}")


def main() -> None:
    global OTHER_CPU
    ap = argparse.ArgumentParser()
    ap.add_argument("--latency", type=int, default=600)
    ap.add_argument("--gap", type=float, default=5.0,
                    help="ms the load generator waits after each latency request")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--memory", type=int, default=100_000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--reference-src", type=Path)
    ap.add_argument("--no-pin", action="store_true")
    ap.add_argument("--phases", default="latency,rates,memory",
                    help="which of latency, rates, memory to run (comma-separated)")
    args = ap.parse_args()
    phases = set(args.phases.split(","))
    cpus = sorted(os.sched_getaffinity(0))
    if not args.no_pin and len(cpus) >= 2:
        PROXY_CPU[:] = ["taskset", "-c", str(cpus[-1])]
        OTHER_CPU = set(cpus[:-1])
        os.sched_setaffinity(0, OTHER_CPU)  # inherited by v1, v2 and the load generator
    work = Path(tempfile.mkdtemp(prefix="sb-mirror-bench-"))
    reply = "Paris is the capital of France, and it is lovely in spring."
    v1, p1 = spawn_scripted_process(reply=reply, reply_mode="fixed", per_chunk_ms=0.5,
                                    chunk_chars=6)
    v2, p2 = spawn_scripted_process(reply=reply, reply_mode="fixed")
    procs: list[subprocess.Popen[bytes]] = [p1, p2]
    try:
        fast1, pf1 = start_caddy(None, work, "instant-v1", pin=False)
        fast2, pf2 = start_caddy(None, work, "instant-v2", pin=False)
        procs += [pf1, pf2]
        caddy, pc = start_caddy(v1, work)
        caddy_fast, pcf = start_caddy(fast1, work, "caddy-fast")
        procs += [pc, pcf]
        src = ROOT / "src"
        mirrors: dict[str, tuple[float, tuple[str, ...], Path, dict[str, str]]] = {
            "mirror": (1.0, (), src, {}),
            "mirror-1p": (1.0, ("--single-process",), src, {}),
            "mirror@0": (0.0, (), src, {}),
            # the shadow process at nice 10 (the default is SCHED_IDLE)
            "mirror-nice": (1.0, ("--shadow-sched", "nice"), src, {}),
        }
        if args.reference_src is not None:
            mirrors["reference"] = (1.0, (), args.reference_src.resolve(), {})
        in_latency = [n for n in mirrors if n not in ("mirror@0", "mirror-nice")]
        slow = {name: start_mirror(v1, v2, work / f"{name}.jsonl", sample, *extra, src=src,
                                   env_extra=env)
                for name, (sample, extra, src, env) in mirrors.items()
                if name in in_latency and "latency" in phases}
        procs.extend(proc for _url, proc in slow.values())
        targets = {"direct": v1, "caddy": caddy,
                   **{name: url for name, (url, _proc) in slow.items()}}
        version = subprocess.run(["/usr/bin/caddy", "version"], capture_output=True,
                                 text=True).stdout.split()[0]
        where = (f"proxies pinned to CPU {PROXY_CPU[-1]}, the rest to {sorted(OTHER_CPU)}"
                 if PROXY_CPU else "not pinned")
        print(f"caddy {version}, {len(cpus)} CPUs, {where}, load "
              f"{os.getloadavg()[0]:.1f}; mirror: two processes, mirror-1p: "
              "--single-process, mirror@0: --sample 0"
              + (f"; latency gap {args.gap:g} ms" if "latency" in phases else "")
              + (f", reference: {args.reference_src}" if args.reference_src else ""),
              flush=True)
        for stream in (False, True):
            if "latency" in phases:
                asyncio.run(latency(targets, args.latency, stream, args.gap / 1000))
        if "latency" in phases:
            print(f"latency done, load {os.getloadavg()[0]:.1f}", flush=True)
        for _name, (_url, proc) in slow.items():
            stop(proc)
            procs.remove(proc)
        if "rates" not in phases:
            args.rounds = 0
        fast = {name: start_mirror(fast1, fast2, work / f"fast-{name}.jsonl", sample, *extra,
                                   src=src, env_extra=env)
                for name, (sample, extra, src, env) in mirrors.items() if args.rounds}
        procs.extend(proc for _url, proc in fast.values())
        rate_targets = {"caddy": caddy_fast, **{n: u for n, (u, _p) in fast.items()}}
        rates: dict[str, list[float]] = {name: [] for name in rate_targets}
        for i in range(args.rounds):
            for name, url in rate_targets.items():
                rates[name].append(rate(url, args.seconds, args.concurrency, work))
            print(f"round {i + 1}, load {os.getloadavg()[0]:.1f}: " + "; ".join(
                f"{name} {got[-1]:.0f}" + ("" if name == "caddy" else
                                           f" ({got[-1] / rates['caddy'][-1]:.2f})")
                for name, got in rates.items()), flush=True)
        c = statistics.median(rates["caddy"]) if args.rounds else 0.0
        if args.rounds:
            print(f"requests/s, median of {args.rounds} rounds of {args.seconds:g} s at "
                  f"{args.concurrency} connections (instant v1 and v2): caddy {c:.0f}; " +
                  "; ".join(f"{name} {statistics.median(got):.0f} "
                            f"({statistics.median(got) / c:.2f} of caddy; per round "
                            f"{min(g / r for g, r in zip(got, rates['caddy'], strict=True)):.2f}–"
                            f"{max(g / r for g, r in zip(got, rates['caddy'], strict=True)):.2f})"
                            for name, got in rates.items() if name != "caddy"), flush=True)
        for name, (_url, proc) in fast.items():
            stop(proc)
            procs.remove(proc)
            lines = (work / f"fast-{name}.jsonl").read_bytes().count(b"\n")
            print(f"{name} logged {lines} rounds; {stats_of(work / f'fast-{name}.jsonl')}",
                  flush=True)
        if args.memory and "memory" in phases:
            dead = f"http://127.0.0.1:{free_port()}"
            for name, extra in (("mirror", ()), ("mirror-1p", ("--single-process",))):
                url, pm = start_mirror(fast1, dead, work / f"dead-{name}.jsonl", 1.0, *extra)
                procs.append(pm)
                steps = asyncio.run(memory(url, pm.pid, args.memory, args.concurrency))
                print(f"{name} RSS over {args.memory} requests, dead shadow (MB, every "
                      f"tenth): {' '.join(f'{s:.1f}' for s in steps)}", flush=True)
                stop(pm)
                procs.remove(pm)
                rounds = (work / f"dead-{name}.jsonl").read_bytes().count(b"\n")
                figures = stats_of(work / f"dead-{name}.jsonl")
                print(f"{name} dead-shadow log: {rounds} rounds; {figures}", flush=True)
    finally:
        for proc in procs:
            if proc in (p1, p2):
                reap_process(proc)
            else:
                stop(proc)


if __name__ == "__main__":
    main()
