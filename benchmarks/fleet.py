"""``bench`` over a fleet of shards beside ``bench`` over one log of the same rounds.

Usage: python benchmarks/fleet.py [--shards 10] [--rounds 100000] [--repeat 3] [--keep DIR]

Generates ``--shards`` logs of ``--rounds`` rounds each (``fleet/node-NN/burnin.jsonl``)
and one log holding all of them (the same lines, shard after shard); warms every index,
then runs interleaved, each a fresh process: ``bench --json --log 'fleet/*/burnin.jsonl'``
and ``bench --json`` on the single log. Prints medians, peak RSS and checks the counts
agree. Asserts no time.
"""

from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_1m import generate

RSS = ("import atexit,resource,sys\n"
       "atexit.register(lambda: print(max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,"
       "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss), file=sys.stderr))\n"
       "from shadow_burnin.cli import cli\nsys.argv=['shadow-burnin',*sys.argv[1:]]\ncli()\n")


def bench(log: str) -> tuple[float, float, dict]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", RSS, "bench", "--json", "--log", log],
                          capture_output=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"bench failed: {proc.stderr.decode()[-800:]}")
    return wall, int(proc.stderr.decode().split()[-1]) / 1024, orjson.loads(proc.stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", type=Path, default=None)
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="sb-fleet-"))
    work.mkdir(parents=True, exist_ok=True)
    single = work / "all.jsonl"
    pattern = str(work / "fleet" / "*" / "burnin.jsonl")
    if not single.exists():
        with open(single, "wb") as out:
            for i in range(args.shards):
                log = work / "fleet" / f"node-{i:02d}" / "burnin.jsonl"
                log.parent.mkdir(parents=True, exist_ok=True)
                generate(log, args.rounds, rng=random.Random(i))
                out.write(log.read_bytes())
    bench(pattern)  # every index built once: both sides read warm indexes below
    bench(str(single))
    walls: dict[str, list[float]] = {"fleet": [], "single": []}
    rss: dict[str, list[float]] = {"fleet": [], "single": []}
    got: dict[str, dict] = {}
    for i in range(args.repeat):
        for kind, log in (("fleet", pattern), ("single", str(single))):
            w, r, got[kind] = bench(log)
            walls[kind].append(w)
            rss[kind].append(r)
            print(f"run {i + 1} {kind}: {w:.2f} s, {r:.0f} MB", flush=True)
    a, b = got["fleet"], got["single"]
    if a["rounds"] != b["rounds"] or a["counts"] != b["counts"]:
        sys.exit("the fleet and the single log disagree")
    n = args.shards * args.rounds
    for kind in walls:
        print(f"{kind:>6} ({args.shards if kind == 'fleet' else 1} file(s), {n:,} rounds): "
              f"median {statistics.median(walls[kind]):.2f} s "
              f"(runs {', '.join(f'{w:.2f}' for w in walls[kind])}), peak RSS "
              f"{statistics.median(rss[kind]):.0f} MB")
    ratio = statistics.median(walls["fleet"]) / statistics.median(walls["single"])
    print(f"fleet / single: {ratio:.2f}x")


if __name__ == "__main__":
    main()
