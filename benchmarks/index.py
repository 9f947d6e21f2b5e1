"""The round index against today's reader and DuckDB, on the 1 000 000-round log.

Usage: python benchmarks/index.py [--rounds 1000000] [--repeat 3] [--keep DIR]

Interleaved, each run a fresh process (start and imports included, as a user pays them):

- ``warm``: ``bench --json`` with the index saved beside the log;
- ``cold``: the same with the index deleted first (rebuilt from the log, then saved);
- ``none``: ``bench --json`` with ``SHADOW_BURNIN_INDEX=off`` (today's reader);
- ``duckdb``: one DuckDB ``read_ndjson`` query over the JSONL computing the counts, p50/p95/p99
  per side and the median prefix match (checked equal to ``bench``'s figures).

The package's bytecode is compiled first (``compileall``, as ``pip install`` leaves it):
with ``PYTHONDONTWRITEBYTECODE`` set and no ``.pyc`` every run would compile ~50 modules
from source, a cost no installed user pays.

Prints medians, ratios, peak RSS (the process and its workers) and the index's size beside
the log's, next to the issue's targets. Asserts no time; exits with a message only if the
figures disagree.
"""

from __future__ import annotations

import argparse
import compileall
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_1m import generate

import shadow_burnin
from shadow_burnin.io.log.sidecars import index_path

RSS = ("import atexit,resource,sys\n"
       "atexit.register(lambda: print(max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,"
       "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss), file=sys.stderr))\n")
BENCH = RSS + ("from shadow_burnin.cli import cli\n"
               "sys.argv=['shadow-burnin','bench','--json','--log',sys.argv[1]]\ncli()\n")
QUERY = """
SELECT count(*) AS rounds,
  count(*) FILTER (WHERE bucket = 'exact') AS exact,
  count(*) FILTER (WHERE bucket = 'prefix-only') AS prefix_only,
  count(*) FILTER (WHERE bucket = 'no-match') AS no_match,
  quantile_cont(v1.latency_ms, [0.5, 0.95, 0.99]) FILTER (WHERE bucket NOT IN
    ('v1-unreachable', 'both-unreachable', 'client-cancelled')) AS v1_latency,
  quantile_cont(v2.latency_ms, [0.5, 0.95, 0.99]) FILTER (WHERE bucket NOT IN
    ('v2-unreachable', 'both-unreachable', 'client-cancelled')) AS v2_latency,
  median(prefix_match_chars) FILTER (WHERE bucket IN ('prefix-only', 'no-match'))
    AS median_prefix
FROM read_ndjson($log, columns = {'kind': 'VARCHAR', 'bucket': 'VARCHAR',
  'prefix_match_chars': 'DOUBLE', 'v1': 'STRUCT(latency_ms DOUBLE)',
  'v2': 'STRUCT(latency_ms DOUBLE)'})
WHERE kind IS NULL OR kind = 'round'
"""
DUCK = RSS + ("import duckdb,json\n"
              f"q={QUERY!r}\n"
              "con=duckdb.connect()\ncon.execute('SET enable_progress_bar=false')\n"
              "print(json.dumps(con.execute(q, {'log': sys.argv[1]}).fetchone()))\n")


def run(code: str, log: Path, env: dict[str, str]) -> tuple[float, float, bytes]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code, str(log)], capture_output=True,
                          env=env, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"run failed: {proc.stderr.decode()[-800:]}")
    return wall, int(proc.stderr.decode().split()[-1]) / 1024, proc.stdout


def duck_matches(bench: dict, duck: list) -> bool:
    rounds, exact, prefix, nomatch, v1, v2, med = duck
    c = bench["counts"]
    lat = bench["latency_ms"]
    return (rounds == bench["rounds"] and (exact, prefix, nomatch)
            == (c["exact"], c["prefix-only"], c["no-match"])
            and [round(x, 3) for x in v1] == [lat["v1"][k] for k in ("p50", "p95", "p99")]
            and [round(x, 3) for x in v2] == [lat["v2"][k] for k in ("p50", "p95", "p99")]
            and med == bench["median_prefix_match_chars"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", type=Path, default=None)
    args = ap.parse_args()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="sb-index-"))
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"bench-v4-{args.rounds}.jsonl"
    if not log.exists():
        generate(log, args.rounds)
    idx = index_path(log)
    compileall.compile_dir(Path(shadow_burnin.__file__).parent, quiet=1)
    base = dict(os.environ)
    modes = {"warm": (BENCH, base), "cold": (BENCH, base),
             "none": (BENCH, {**base, "SHADOW_BURNIN_INDEX": "off"}), "duckdb": (DUCK, base)}
    if not idx.exists():
        run(BENCH, log, base)  # the first warm run finds an index
    times: dict[str, list[float]] = {m: [] for m in modes}
    rss: dict[str, list[float]] = {m: [] for m in modes}
    outs: dict[str, bytes] = {}
    ducks: list[bytes] = []
    for _ in range(args.repeat):
        for mode, (code, env) in modes.items():
            if mode == "cold":
                idx.unlink(missing_ok=True)
            wall, peak, out = run(code, log, env)
            times[mode].append(wall)
            rss[mode].append(peak)
            if mode == "duckdb":  # its float sums vary in the last digits: checked rounded
                ducks.append(out)
            elif outs.setdefault(mode, out) != out:
                sys.exit(f"{mode}: output changed between runs")
    if not outs["warm"] == outs["cold"] == outs["none"]:
        sys.exit("bench --json differs with and without the index")
    bench = orjson.loads(outs["none"])
    for duck in ducks:
        if not duck_matches(bench, orjson.loads(duck.splitlines()[-1])):
            sys.exit(f"DuckDB's figures differ from bench's: {duck!r}")
    med = {m: statistics.median(t) for m, t in times.items()}
    isize, lsize = idx.stat().st_size, log.stat().st_size
    print(f"{args.rounds:,} rounds, log {lsize / 1e6:,.0f} MB, index "
          f"{isize / 1e6:,.1f} MB ({100 * isize / lsize:.1f} "
          f"% of the log; target <= 15 %); {args.repeat} interleaved runs, load "
          f"{os.getloadavg()[0]:.1f}")
    for m in modes:
        print(f"  {m:7s} median {med[m]:6.2f} s (runs {', '.join(f'{t:.2f}' for t in times[m])})"
              f"  peak RSS {statistics.median(rss[m]):5.0f} MB")
    print(f"  warm vs DuckDB: {med['duckdb'] / med['warm']:.2f}x faster (target >= 4x); "
          f"cold vs none: {med['none'] / med['cold']:.2f}x (target >= 1x); "
          f"warm vs none: {med['none'] / med['warm']:.2f}x; warm RSS target <= 200 MB")
    print("  figures identical: bench --json warm = cold = none; DuckDB = bench (counts, "
          "p50/p95/p99 per side, median prefix)")


if __name__ == "__main__":
    main()
