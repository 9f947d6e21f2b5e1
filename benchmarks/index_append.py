"""The runner's rounds/s with and without the round index appended in its commit thread.

Usage: python benchmarks/index_append.py [--rounds 5000] [--concurrency 8] [--repeat 3]

Two instant scripted servers (subprocesses, one per side); ``shadow-burnin run --interval
0 --concurrency 8 --rounds R`` into a fresh log, alternately with the index appender
(``with``: what ``run`` does) and without it (``without``: ``Store._open_index`` replaced by
a no-op in that process, i.e. the runner before the appendable index). Interleaved in
ABBA order (without/with, then with/without, …); prints
each run's rounds/s (rounds over the process's wall time, start included) and its CPU
time per round (user + system of the run process, start included), the medians and
their ratio, and the index's size beside the log's. Asserts no time.
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
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import reap_process, spawn_scripted_process  # noqa: E402

RUN = ("import sys\n"
       "if sys.argv[1] == 'without':\n"
       "    from shadow_burnin.io.log.store import Store\n"
       "    Store._open_index = lambda self: None\n"
       "from shadow_burnin.cli import main\n"
       "sys.argv = ['shadow-burnin', *sys.argv[2:]]\nmain()\n")


def _children_cpu() -> float:
    """User + system CPU seconds of the finished child processes so far."""
    import resource

    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sb-append-"))
    rows = [orjson.dumps({"id": f"p{i}", "category": f"c{i % 4}", "prompt": f"bench {i}"})
            for i in range(16)]
    prompts = work / "p.jsonl"
    prompts.write_bytes(b"\n".join(rows) + b"\n")
    (u1, p1), (u2, p2) = spawn_scripted_process(), spawn_scripted_process()
    rates: dict[str, list[float]] = {"without": [], "with": []}
    cpu: dict[str, list[float]] = {"without": [], "with": []}  # µs of CPU per round
    sizes = (0, 0)
    segments: list[int] = []
    load0 = os.getloadavg()[0]
    try:
        for i in range(args.repeat):
            # ABBA order: neither mode always runs first (warm caches, load drift)
            for mode in (("without", "with") if i % 2 == 0 else ("with", "without")):
                log = work / f"{mode}-{i}.jsonl"
                argv = [sys.executable, "-c", RUN, mode, "run", "--v1", u1, "--v2", u2,
                        "--interval", "0", "--concurrency", str(args.concurrency),
                        "--rounds", str(args.rounds), "--log", str(log), "--prompts",
                        str(prompts), "--quiet"]
                t0 = time.perf_counter()
                cpu0 = _children_cpu()
                subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
                rates[mode].append(args.rounds / (time.perf_counter() - t0))
                cpu[mode].append((_children_cpu() - cpu0) / args.rounds * 1e6)
                idx = log.with_name(log.name + ".idx")
                if mode == "with":
                    from shadow_burnin.io.log.index import decode

                    got = decode(idx.read_bytes())
                    assert got.covered == log.stat().st_size and len(got.columns) == \
                        args.rounds, "the runner's index does not cover its log"
                    sizes = (idx.stat().st_size, log.stat().st_size)
                    segments.append(got.segments)
                else:
                    assert not idx.exists()
    finally:
        reap_process(p1)
        reap_process(p2)
        shutil.rmtree(work, ignore_errors=True)
    med = {m: statistics.median(r) for m, r in rates.items()}
    print(f"run --interval 0 --concurrency {args.concurrency} --rounds {args.rounds}, instant "
          f"scripted servers, {args.repeat} interleaved runs each, load {load0:.1f} -> "
          f"{os.getloadavg()[0]:.1f}")
    for m, r in rates.items():
        print(f"  {m:7s} index: median {med[m]:6.0f} rounds/s (runs "
              f"{', '.join(f'{x:.0f}' for x in r)}); CPU of the run process median "
              f"{statistics.median(cpu[m]):.0f} µs/round (runs "
              f"{', '.join(f'{x:.0f}' for x in cpu[m])})")
    print(f"  with/without: {med['with'] / med['without']:.3f} (target >= 1, i.e. not lower "
          f"within noise); index as the runner left it {sizes[0] / 1e3:,.0f} kB = "
          f"{100 * sizes[0] / max(1, sizes[1]):.1f} % of the log ({sizes[1] / 1e3:,.0f} kB), "
          f"{statistics.median(segments or [0]):.0f} segments (median)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
