"""Soak: many rounds at --interval 0 against instant scripted servers; is the runner flat?

Usage: python benchmarks/soak.py [--rounds 100000] [--concurrency 1,8,32] [--every 10]
                                 [--warmup 30] [--keep DIR] [-- extra run flags]

For each concurrency N: start `shadow-burnin run --interval 0 --concurrency N --rounds R`
against two scripted servers (subprocesses, one per side), sample the runner's RSS
(/proc/PID/status VmRSS), open fds (/proc/PID/fd) and progress (the state file) every
--every seconds, then print the samples and: rounds/s, CPU time per round and per request
(wait4 rusage of the runner), whether RSS stayed within +-10 MB of its first post-warm-up
sample and whether the fd count stayed flat. Asserts nothing.

Forensics are at their defaults unless flags after `--` say otherwise (e.g. `-- --aa-every
0`): every 10th round is an A/A round, i.e. two more requests to v1 and an `aa` pair
inside the round, so a round costs 2.2 requests on average; logprobs are asked for in the
first round only (the scripted server sends none, so neither side is asked again) and
only non-exact rounds are re-fired (none here: both servers echo). The
requests actually sent (the servers' counters) and the A/A records are printed per run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import numpy as np
import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import reap_process, spawn_scripted_process  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Sample:
    t: float
    rounds: int
    rss_mb: float
    fds: int


@dataclass
class Result:
    concurrency: int
    rounds: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    max_rss_mb: float = 0.0
    server_cpu_s: float = 0.0
    requests: int = 0
    aa_records: int = 0
    load: tuple[float, float] = (0.0, 0.0)  # 1-min load average at start and end
    exit: int = 0
    samples: list[Sample] = field(default_factory=list)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        kb = next(int(x.split()[1]) for x in fh if x.startswith("VmRSS:"))
    return kb / 1024


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def last_round(state: Path) -> int:
    try:
        return int(orjson.loads(state.read_bytes())["last_round"])
    except (OSError, orjson.JSONDecodeError, KeyError):
        return 0


def served(url: str) -> int:
    """The completion requests a scripted server answered so far."""
    with urllib.request.urlopen(f"{url}/_scripted/state", timeout=10) as resp:
        return int(orjson.loads(resp.read())["count"])


def aa_records(log: Path) -> int:
    """A/A pairs in the log: inside their round (``"aa":{``), or old-layout lines."""
    with open(log, "rb") as fh:
        return sum(1 for line in fh if b'"aa":{' in line or b'"kind":"aa"' in line)


def soak(work: Path, urls: list[str], pids: list[int], n: int, rounds: int, every: float,
         extra: list[str]) -> Result:
    log, state = work / f"soak-c{n}.jsonl", work / f"soak-c{n}.state"
    prompts = work / "small.jsonl"
    argv = [sys.executable, "-m", "shadow_burnin", "run", "--v1", urls[0], "--v2", urls[1],
            "--interval", "0", "--concurrency", str(n), "--rounds", str(rounds),
            "--log", str(log), "--prompts", str(prompts), "--quiet", *extra]
    res = Result(concurrency=n)
    server0 = sum(cpu_s(p) for p in pids)
    requests0 = sum(served(u) for u in urls)
    load0 = os.getloadavg()[0]
    t0 = time.monotonic()
    with open(work / f"soak-c{n}.err", "wb") as err:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True)
    next_at = t0 + every
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        now = time.monotonic()
        if now >= next_at:
            next_at += every
            try:
                s = Sample(now - t0, last_round(state), rss_mb(proc.pid),
                           len(os.listdir(f"/proc/{proc.pid}/fd")))
            except (FileNotFoundError, ProcessLookupError, StopIteration):
                continue
            res.samples.append(s)
            prev = res.samples[-2] if len(res.samples) > 1 else Sample(0, 0, 0, 0)
            rate = (s.rounds - prev.rounds) / (s.t - prev.t)
            print(f"  c={n} t={s.t:6.0f}s rounds={s.rounds:7d} ({rate:6.1f}/s) "
                  f"rss={s.rss_mb:6.1f} MB fds={s.fds}", flush=True)
        time.sleep(0.2)
    proc.returncode = os.waitstatus_to_exitcode(status)
    res.wall_s = time.monotonic() - t0
    res.exit = proc.returncode
    res.rounds = last_round(state)
    res.cpu_s = usage.ru_utime + usage.ru_stime
    res.max_rss_mb = usage.ru_maxrss / 1024
    res.server_cpu_s = sum(cpu_s(p) for p in pids) - server0
    res.requests = sum(served(u) for u in urls) - requests0
    res.aa_records = aa_records(log) if log.exists() else 0
    res.load = (load0, os.getloadavg()[0])
    return res


def report(res: Result, warmup: float) -> None:
    steady = [s for s in res.samples if s.t >= warmup]
    rounds = max(1, res.rounds)
    print(f"concurrency {res.concurrency}: {res.rounds} rounds in {res.wall_s:.0f} s "
          f"(exit {res.exit}) = {res.rounds / res.wall_s:.1f} rounds/s overall; load "
          f"{res.load[0]:.2f} -> {res.load[1]:.2f}")
    print(f"  {res.requests} requests ({res.requests / rounds:.2f} per round), "
          f"{res.aa_records} A/A records")
    print(f"  runner CPU {res.cpu_s:.1f} s = {1000 * res.cpu_s / rounds:.3f} ms per round, "
          f"{1e6 * res.cpu_s / max(1, res.requests):.0f} us per request; servers' CPU "
          f"{res.server_cpu_s:.1f} s; runner max RSS {res.max_rss_mb:.1f} MB")
    if len(steady) >= 3:
        rates = [(b.rounds - a.rounds) / (b.t - a.t) for a, b in pairwise(steady)]
        base = steady[0].rss_mb
        lo, hi = min(s.rss_mb for s in steady), max(s.rss_mb for s in steady)
        slope = np.polyfit([s.rounds for s in steady], [s.rss_mb for s in steady], 1)[0]
        fds = [s.fds for s in steady]
        third = max(1, len(fds) // 3)
        trend = statistics.median(fds[-third:]) - statistics.median(fds[:third])
        print(f"  after {warmup:.0f} s warm-up ({len(steady)} samples): median "
              f"{statistics.median(rates):.1f} rounds/s; RSS {lo:.1f}..{hi:.1f} MB "
              f"(first {base:.1f}), {slope * 10_000:+.2f} MB per 10k rounds: within +-10 MB: "
              f"{'yes' if hi - base <= 10 and base - lo <= 10 else 'NO'}")
        print(f"  fds {min(fds)}..{max(fds)} (first {fds[0]}, last {fds[-1]}; median of the "
              f"last third minus the first third: {trend:+g}): "
              f"{'flat' if max(fds) - min(fds) <= 2 else 'varies'}, "
              f"{'no growth' if trend <= 2 else 'GROWING'}")
    else:
        print("  too short for a post-warm-up verdict (fewer than 3 samples)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=100_000)
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--every", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=30.0)
    ap.add_argument("--keep", type=Path)
    ap.add_argument("extra", nargs="*", help="more `run` flags (after --)")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="soak-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = [orjson.dumps({"id": f"p{i}", "category": f"c{i % 4}", "prompt": f"soak {i} é"})
            for i in range(16)]
    (work / "small.jsonl").write_bytes(b"\n".join(rows) + b"\n")
    print(f"load before: {os.getloadavg()}; cores: {os.cpu_count()}", flush=True)
    (u1, p1), (u2, p2) = spawn_scripted_process(), spawn_scripted_process()
    results = []
    try:
        for n in (int(x) for x in args.concurrency.split(",")):
            results.append(soak(work, [u1, u2], [p1.pid, p2.pid], n, args.rounds,
                                args.every, args.extra))
            print(f"load now: {os.getloadavg()}", flush=True)
    finally:
        reap_process(p1)
        reap_process(p2)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print()
    for res in results:
        report(res, args.warmup)
    return 0


if __name__ == "__main__":
    sys.exit(main())
