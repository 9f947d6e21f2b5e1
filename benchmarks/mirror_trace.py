"""Who made a proxy's request wait: ``benchmarks/mirror.py``'s latency phase under a kernel
scheduler trace.

Usage (root, from the repository root):
    python benchmarks/mirror_trace.py OUTDIR [mirror.py latency flags, e.g. --gap 0 --isolate]

Runs ``benchmarks/mirror.py --phases latency --kinds plain --dump OUTDIR/stamps.jsonl`` with
tracefs recording ``sched_switch``, ``sched_wakeup`` and softirqs on every CPU, on the
``mono`` clock (the benchmark stamps each request on CLOCK_MONOTONIC too), then prints:

- wake-ups: for each process of the run (v1, the load generator, Caddy, each mirror), how
  long it waited between being woken and running, by what was running on that CPU when it
  was woken (``idle``: the CPU was halted; this VM wakes a halted vCPU slowly);
- the slowest 1 % of each target's requests against its fastest half: the CPU time each
  process (and softirq) took on each CPU during those requests, per request.

A process this benchmark starts leads its own session, so with
``kernel.sched_autogroup_enabled`` the kernel schedules it as its own group.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import collections
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]
TRACING = Path("/sys/kernel/tracing")
EVENTS = ("sched:sched_switch", "sched:sched_wakeup", "irq:softirq_entry", "irq:softirq_exit")
LINE = re.compile(r"^\s*(.+?)-(\d+)\s+\(\s*([\d-]+)\)\s+\[(\d+)\]\s+\S+\s+(\d+\.\d+): (\w+): (.*)$")
SWITCH = re.compile(r"prev_pid=(\d+) .*==> next_comm=.* next_pid=(\d+)")
WAKEUP = re.compile(r"pid=(\d+) prio=\d+ target_cpu=(\d+)")
SOFTIRQ = re.compile(r"action=(\w+)")


def write(name: str, value: str) -> None:
    (TRACING / name).write_text(value)


def record(out: Path, flags: list[str]) -> None:
    if not (TRACING / "trace").exists():
        subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACING)], check=True)
    write("tracing_on", "0")
    write("trace", "")
    write("trace_clock", "mono")
    write("options/record-tgid", "1")
    write("buffer_size_kb", "131072")
    write("set_event", "\n".join(EVENTS))
    write("tracing_on", "1")
    try:
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "mirror.py"), "--phases",
                        "latency", "--kinds", "plain", "--dump", str(out / "stamps.jsonl"),
                        *flags], check=True)
    finally:
        write("tracing_on", "0")
        (out / "trace.txt").write_bytes((TRACING / "trace").read_bytes())
        write("set_event", "")
        write("trace", "")


class Trace:
    """Run intervals per CPU, softirq intervals, and wake-up waits, from tracefs text.
    Some switches from the idle task are missing from this kernel's trace, so a CPU's owner
    is also taken from the task column of each of its events."""

    def __init__(self, path: Path) -> None:
        self.tgid: dict[int, int] = {}
        runs: dict[int, list[tuple[float, float, int]]] = collections.defaultdict(list)
        self.soft: dict[int, list[tuple[float, float, str]]] = collections.defaultdict(list)
        self.waits: dict[tuple[int, int], list[float]] = collections.defaultdict(list)
        owner: dict[int, tuple[int, float]] = {}
        opened: dict[tuple[int, str], float] = {}
        woken: dict[int, tuple[float, int]] = {}  # tid -> (when, who ran on its CPU)
        for line in path.read_text(errors="replace").splitlines():
            m = LINE.match(line)
            if not m:
                continue
            task, cpu, t, event, rest = int(m[2]), int(m[4]), float(m[5]), m[6], m[7]
            if m[3] != "-------":
                self.tgid[task] = int(m[3])
            if cpu in owner and owner[cpu][0] != task:
                runs[cpu].append((owner[cpu][1], t, owner[cpu][0]))
                owner[cpu] = (task, t)
            owner.setdefault(cpu, (task, t))
            self._started(woken, task, t)
            if event == "sched_switch" and (s := SWITCH.search(rest)):
                runs[cpu].append((owner[cpu][1], t, owner[cpu][0]))
                owner[cpu] = (int(s[2]), t)
                self._started(woken, int(s[2]), t)
            elif event == "sched_wakeup" and (w := WAKEUP.search(rest)):
                target = int(w[2])
                woken.setdefault(int(w[1]), (t, owner.get(target, (0, t))[0]))
            elif event.startswith("softirq_") and (q := SOFTIRQ.search(rest)):
                key = (cpu, q[1])
                if event == "softirq_entry":
                    opened[key] = t
                elif key in opened:
                    self.soft[cpu].append((opened.pop(key), t, "softirq:" + q[1]))
        self.runs = {cpu: np.array(r) for cpu, r in runs.items()}

    def _started(self, woken: dict[int, tuple[float, int]], tid: int, t: float) -> None:
        if tid in woken:
            at, who = woken.pop(tid)
            self.waits[(tid, who)].append(t - at)

    def during(self, start: float, end: float) -> dict[tuple[int, int | str], float]:
        """CPU time per (cpu, tid or softirq) within [start, end], in seconds."""
        acc: dict[tuple[int, int | str], float] = collections.defaultdict(float)
        for cpu, runs in self.runs.items():
            i = int(np.searchsorted(runs[:, 1], start))
            while i < len(runs) and runs[i, 0] < end:
                a, b, tid = runs[i]
                acc[(cpu, int(tid))] += min(b, end) - max(a, start)
                i += 1
            for a, b, name in self.soft[cpu]:
                if a < end and b > start:
                    acc[(cpu, name)] += min(b, end) - max(a, start)
        return acc


def report(out: Path) -> None:
    trace = Trace(out / "trace.txt")
    blocks = [orjson.loads(line) for line in (out / "stamps.jsonl").read_bytes().splitlines()]
    role = {pid: name for b in blocks if "pids" in b for name, pid in b["pids"].items()}

    def name(tid: int | str) -> str:
        if isinstance(tid, str):
            return tid
        if tid == 0:
            return "idle"
        group = trace.tgid.get(tid, tid)
        return role.get(group, f"other[{group}]")

    print("wake-ups: woken process, what ran on its CPU then, count, mean / p99 / max µs")
    grouped: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    for (tid, ran_tid), waits in trace.waits.items():
        grouped[(name(tid), "itself" if ran_tid == tid else name(ran_tid))] += waits
    for (woken, ran), waits in sorted(grouped.items(), key=lambda kv: -sum(kv[1])):
        if woken.startswith(("other", "idle", "instant")) or len(waits) < 20:
            continue
        us = np.array(waits) * 1e6
        print(f"  {woken:13} while {ran:14} {len(us):6}  {us.mean():7.1f} / "
              f"{np.percentile(us, 99):7.1f} / {us.max():7.0f}")
    for block in blocks:
        if "stamps" not in block:
            continue
        for target, flat in block["stamps"].items():
            spans = np.array(flat).reshape(-1, 2)
            took = spans[:, 1] - spans[:, 0]
            slow = np.flatnonzero(took >= np.percentile(took, 99))
            fast = np.flatnonzero(took < np.percentile(took, 50))
            print(f"{target}: p50 {np.median(took) * 1e3:.3f} ms, p99 "
                  f"{np.percentile(took, 99) * 1e3:.3f} ms; CPU time per request, µs:")
            for label, picked in (("slowest 1 %", slow), ("fastest half", fast)):
                acc: dict[str, float] = collections.defaultdict(float)
                for i in picked:
                    for (cpu, who), secs in trace.during(*spans[i]).items():
                        acc[f"{cpu}:{name(who)}"] += secs
                print(f"  {label:12} " + ", ".join(
                    f"{k} {v / len(picked) * 1e6:.0f}" for k, v in sorted(acc.items())
                    if v / len(picked) * 1e6 >= 5))


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "trace.txt").exists():
        record(out, sys.argv[2:])
    report(out)


if __name__ == "__main__":
    main()
