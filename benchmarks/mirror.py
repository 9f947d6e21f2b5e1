"""The mirror against Caddy's ``reverse_proxy``, side by side in the same run.

Usage: python benchmarks/mirror.py [--latency 600] [--gap 5] [--isolate [--block 100]]
       [--aa] [--v2-shared] [--kinds plain,stream] [--latency-mirrors mirror,mirror-1p]
       [--mirror-args '...'] [--dump FILE] [--rounds 5] [--seconds 5]
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
   0.5 ms) directly, through Caddy and through each mirror, interleaved one by one (in a
   fresh random order every cycle, seeded, so no target always follows the same one); what
   each proxy adds at p50 and p99 (its percentile minus the direct one), non-streaming
   (total) and streaming (time to first byte and total). After each request the load
   generator waits ``--gap`` ms (the same for every target; 0: back to back). Without a
   pause, what a proxy does after a reply — the single-process mirror's shadow exchange,
   the two-process mirror's shadow process, Caddy's own runtime — lands on whichever
   target comes next in the interleaving. ``--isolate`` measures each target alone
   instead: ``--block`` requests at a time (blocks interleaved), every other proxy
   stopped (SIGSTOP) meanwhile, so a proxy's after-work can only land on its own next
   request. ``--aa`` adds a second, identical Caddy (``caddy-b``): how far two copies of
   one proxy differ is the method's noise. v2 (the mirrors' shadow target) runs in a
   cgroup with ``cpu.idle = 1`` (root; else at ``SCHED_IDLE``, which autogroups make
   weaker), standing for a v2 on its own machine: sharing the load generator's and v1's
   CPU as their equal, it would delay v1's replies to the mirrors' requests while it
   answers their copies (traced: 119 µs on average on nearly every mirror request back
   to back), a cost of this 2-CPU box, not of the proxy (``--v2-shared`` keeps that).
   ``--dump FILE`` writes every request's start and end on CLOCK_MONOTONIC and every
   process's pid, to match against a kernel trace (tracefs, ``trace_clock`` mono);
2. requests/s: ``--rounds`` rounds, each running every proxy in turn for ``--seconds``
   (alone: the other proxies stopped meanwhile, as with ``--isolate``) with 32
   connections (wrk, C, one thread; else an aiohttp client), against an instant v1 and
   v2 (a Caddy ``static_response`` on the other CPU); the median per proxy and its ratio
   to Caddy's median (and the ratio in each round);
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
import contextlib
import json
import os
import random
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
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


async def one(session: aiohttp.ClientSession, url: str, body: bytes,
              stamps: list[float] | None = None) -> tuple[float, float]:
    """(time to first byte, total) in ms for one request; ``stamps`` gets its start and
    end on CLOCK_MONOTONIC (``perf_counter`` on Linux), in seconds."""
    t0 = time.perf_counter()
    async with session.post(url + "/v1/completions", data=body,
                            headers={"Content-Type": "application/json"}) as resp:
        first = None
        async for _chunk in resp.content.iter_any():
            if first is None:
                first = time.perf_counter()
        end = time.perf_counter()
    if stamps is not None:
        stamps += (t0, end)
    return ((first or end) - t0) * 1000, (end - t0) * 1000


IDLE_CGROUP = Path("/sys/fs/cgroup/cpu/shadow-burnin-bench-idle")  # cgroup v1 cpu.idle


def idle_class(pid: int) -> str:
    """Run ``pid`` (v2, on the load generator's CPU) so it never delays what shares that
    CPU: it stands for a v2 on its own machine. Each process this benchmark starts leads
    its own session, and with ``kernel.sched_autogroup_enabled`` the kernel schedules
    sessions as groups, so a thread's ``SCHED_IDLE`` only yields within its own session;
    a cgroup with ``cpu.idle = 1`` yields to everything. Returns how it was done."""
    try:
        IDLE_CGROUP.mkdir(exist_ok=True)
        (IDLE_CGROUP / "cpu.idle").write_text("1")
        (IDLE_CGROUP / "cgroup.procs").write_text(str(pid))
        return f"v2 in cgroup {IDLE_CGROUP} (cpu.idle 1)"
    except OSError as exc:
        for tid in os.listdir(f"/proc/{pid}/task"):
            os.sched_setscheduler(int(tid), os.SCHED_IDLE, os.sched_param(0))
        return f"v2 at SCHED_IDLE only (no idle cgroup: {exc.strerror})"


def group_tasks(pgid: int) -> list[Path]:
    """Every thread of every process in process group ``pgid`` (its /proc task dirs)."""
    tasks = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[2]) == pgid:
                tasks += list((proc / "task").iterdir())
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
    return tasks


def stopped(task: Path) -> bool:
    try:
        return (task / "stat").read_text().rsplit(")", 1)[1].split()[0] in "tTXZ"
    except OSError:
        return True  # gone


def hold(groups: dict[str, int], running: str) -> None:
    """Only ``running``'s process group may run (SIGCONT); every other proxy's group is
    stopped (SIGSTOP), and this returns once every one of their threads is: nothing of
    theirs — a Go collection, a shadow's leftovers, a commit — takes the proxy CPU
    meanwhile (a ``SCHED_IDLE`` shadow only gets to act on the signal when the CPU is
    free, hence the wait)."""
    for name, pgid in groups.items():
        if name != running:
            os.killpg(pgid, signal.SIGSTOP)
    if running in groups:
        os.killpg(groups[running], signal.SIGCONT)
    tasks = [t for name, pgid in groups.items() if name != running for t in group_tasks(pgid)]
    deadline = time.monotonic() + 10
    while not all(stopped(t) for t in tasks):
        if time.monotonic() > deadline:
            raise RuntimeError("a proxy did not stop within 10 s")
        time.sleep(0.001)


@contextlib.contextmanager
def held(groups: dict[str, int]) -> Iterator[None]:
    """Inside: ``hold`` may stop proxies; on the way out every one runs again."""
    try:
        yield
    finally:
        for pgid in groups.values():
            os.killpg(pgid, signal.SIGCONT)


async def latency(targets: dict[str, str], n: int, stream: bool, gap: float,
                  dump: Path | None = None, isolate: dict[str, int] | None = None,
                  block: int = 100, seed: int = 0) -> None:
    """Interleaved one request at a time; with ``isolate`` (each proxy's process group),
    interleaved ``block`` requests at a time, every other proxy stopped meanwhile."""
    body = orjson.dumps(dict(BODY, stream=stream))
    samples: dict[str, list[tuple[float, float]]] = {k: [] for k in targets}
    stamps: dict[str, list[float]] = {k: [] for k in targets}
    size = block if isolate else 1
    with held(isolate or {}):
        async with aiohttp.ClientSession() as session:
            order = random.Random(seed)
            for i in range(0, n + 50, size):
                # a fresh order every cycle: no target always comes first, or after the
                # same neighbour, whose after-work would land on it (in a fixed order, and
                # still in a rotated one, which keeps the neighbours, the same Caddy run
                # twice gave p50s 0.02-0.07 ms apart)
                for name in order.sample(list(targets), len(targets)):
                    url = targets[name]
                    if isolate:
                        hold(isolate, name)
                    for j in range(i, min(i + size, n + 50)):
                        measured = j >= 50  # the first 50 are warm-up
                        got = await one(session, url, body, stamps[name] if measured else None)
                        await asyncio.sleep(gap)
                        if measured:
                            samples[name].append(got)
    if dump is not None:  # every measured request's (start, end), to match against traces
        with dump.open("ab") as out:
            out.write(orjson.dumps({"stream": stream, "stamps": stamps}) + b"\n")
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
        print(f"  {label} minus caddy, 95 % interval (paired bootstrap over cycles): " +
              "; ".join(f"{name} p50 {lo50:+.2f}..{hi50:+.2f} p99 {lo99:+.2f}..{hi99:+.2f} ms"
                        for name in arr if name not in ("direct", "caddy")
                        for (lo50, hi50), (lo99, hi99) in [interval(arr[name], arr["caddy"])]),
              flush=True)


def interval(a: np.ndarray, b: np.ndarray, draws: int = 1000
             ) -> list[tuple[float, float]]:
    """95 % intervals of (p50, p99) of ``a`` minus those of ``b``, resampling the cycles
    (``a[i]`` and ``b[i]`` were measured in the same cycle, so a drift moves both)."""
    picks = np.random.default_rng(0).integers(0, len(a), size=(draws, len(a)))
    out = []
    for q in (50, 99):
        diff = np.percentile(a[picks], q, axis=1) - np.percentile(b[picks], q, axis=1)
        lo, hi = np.percentile(diff, [2.5, 97.5])
        out.append((float(lo), float(hi)))
    return out


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


def print_round(i: int, rates: dict[str, list[float]]) -> None:
    print(f"round {i + 1}, load {os.getloadavg()[0]:.1f}: " + "; ".join(
        f"{name} {got[-1]:.0f}" + ("" if name == "caddy" else
                                   f" ({got[-1] / rates['caddy'][-1]:.2f})")
        for name, got in rates.items()), flush=True)


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
            f"dropped by the log (disk behind) {last.get('log_dropped', 0)}, "
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
    ap.add_argument("--kinds", default="plain,stream",
                    help="latency: plain (non-streaming), stream, or both")
    ap.add_argument("--latency-mirrors", default="mirror,mirror-1p",
                    help="which mirrors the latency phase measures beside direct and caddy")
    ap.add_argument("--mirror-args", default="",
                    help="extra flags for every mirror, e.g. '--commit-every 60'")
    ap.add_argument("--isolate", action="store_true",
                    help="latency: each target measured alone, --block requests at a time "
                         "(interleaved), the other proxies stopped (SIGSTOP) meanwhile")
    ap.add_argument("--block", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0, help="latency: the targets' orders")
    ap.add_argument("--v2-shared", dest="v2_idle", action="store_false",
                    help="latency: v2 shares the load generator's and v1's CPU as their "
                         "equal (by default it runs in an idle cgroup: it stands for a v2 on "
                         "its own machine and never delays them)")
    ap.add_argument("--aa", action="store_true",
                    help="latency: also measure a second, identical Caddy (caddy-b): what "
                         "two copies of the same proxy differ by is the method's noise")
    ap.add_argument("--v1-delay", type=float, default=0.0,
                    help="latency: ms v1 waits before its reply (an LLM's prompt time; "
                         "default 0: an instant v1)")
    ap.add_argument("--dump", type=Path,
                    help="latency: append each request's start and end (CLOCK_MONOTONIC, "
                         "s) per target as a JSON line, to match against a kernel trace")
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
                                    chunk_chars=6, delay_ms=args.v1_delay or None)
    v2, p2 = spawn_scripted_process(reply=reply, reply_mode="fixed")
    if args.v2_idle:
        print(idle_class(p2.pid), flush=True)
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
        in_latency = [n for n in args.latency_mirrors.split(",") if n]
        for name in list(mirrors):
            sample, extra, tree, env = mirrors[name]
            mirrors[name] = (sample, (*extra, *args.mirror_args.split()), tree, env)
        slow = {name: start_mirror(v1, v2, work / f"{name}.jsonl", sample, *extra,
                                   src=src, env_extra=env)
                for name, (sample, extra, src, env) in mirrors.items()
                if name in in_latency and "latency" in phases}
        procs.extend(proc for _url, proc in slow.values())
        targets = {"direct": v1, "caddy": caddy,
                   **{name: url for name, (url, _proc) in slow.items()}}
        groups = {"caddy": pc.pid, **{name: proc.pid for name, (_u, proc) in slow.items()}}
        if args.aa and "latency" in phases:  # an A/A control: the same Caddy again
            targets["caddy-b"], pcb = start_caddy(v1, work, "caddy-b")
            procs.append(pcb)
            groups["caddy-b"] = pcb.pid
        version = subprocess.run(["/usr/bin/caddy", "version"], capture_output=True,
                                 text=True).stdout.split()[0]
        where = (f"proxies pinned to CPU {PROXY_CPU[-1]}, the rest to {sorted(OTHER_CPU or ())}"
                 if PROXY_CPU else "not pinned")
        print(f"caddy {version}, {len(cpus)} CPUs, {where}, load "
              f"{os.getloadavg()[0]:.1f}; mirror: two processes, mirror-1p: "
              "--single-process, mirror@0: --sample 0"
              + (f"; latency gap {args.gap:g} ms" if "latency" in phases else "")
              + (f", mirror flags {args.mirror_args!r}" if args.mirror_args else "")
              + (f", reference: {args.reference_src}" if args.reference_src else ""),
              flush=True)
        if args.dump is not None:  # who is who, for the trace
            pids = {"bench": os.getpid(), "v1": p1.pid, "v2": p2.pid, "caddy": pc.pid,
                    "instant-v1": pf1.pid, "instant-v2": pf2.pid}
            for name, (_url, proc) in slow.items():
                pids[name] = proc.pid
                for child in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text(
                        ).split():
                    pids[f"{name}-shadow"] = int(child)
            with args.dump.open("ab") as out:
                out.write(orjson.dumps({"pids": pids}) + b"\n")
        kinds = args.kinds.split(",")
        for stream in [s for s in (False, True) if ("stream" if s else "plain") in kinds]:
            if "latency" in phases:
                asyncio.run(latency(targets, args.latency, stream, args.gap / 1000,
                                    args.dump, groups if args.isolate else None, args.block,
                                    args.seed * 2 + stream))
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
        # each proxy alone while it is measured: a mirror's shadow still working through
        # the copies of its own run (its queue) would take the CPU from the next target
        # (with the kernel's autogroups its SCHED_IDLE yields only to its own process)
        rate_groups = {"caddy": pcf.pid, **{n: proc.pid for n, (_u, proc) in fast.items()}}
        with held(rate_groups):
            for i in range(args.rounds):
                for name, url in rate_targets.items():
                    hold(rate_groups, name)
                    rates[name].append(rate(url, args.seconds, args.concurrency, work))
                print_round(i, rates)
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
        if args.v2_idle:  # empty now that v2 is gone
            with contextlib.suppress(OSError):
                IDLE_CGROUP.rmdir()


if __name__ == "__main__":
    main()
