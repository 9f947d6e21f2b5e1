"""``export --parquet`` on the 1 000 000-round log, beside ``bench --json`` on the same log.

Usage: python benchmarks/export.py [--rounds 1000000] [--repeat 3] [--keep DIR] [--texts]

Interleaved, each run a fresh process (start and imports included): ``export --parquet``
(with ``--texts`` also the export with reply texts) and, as the reference, ``bench --json``
with its index warm. Prints median wall time and peak RSS of each, the Parquet size beside
the log's, and checks the README's DuckDB query on the export against ``bench --json``
(the exact-match rate and both p95s must be equal). Asserts no time.
"""

from __future__ import annotations

import argparse
import shutil
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
QUERY = """
SELECT count(*),
       count(*) FILTER (WHERE bucket = 'exact')
         / count(*) FILTER (WHERE bucket IN ('exact', 'prefix-only', 'no-match')),
       round(quantile_cont(v1_latency_ms, 0.95), 3),
       round(quantile_cont(v2_latency_ms, 0.95), 3)
FROM read_parquet($files)
"""


def timed(*args: str) -> tuple[float, float, bytes]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", RSS, *args], capture_output=True,
                          check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{args[0]} failed: {proc.stderr.decode()[-800:]}")
    rss = int(proc.stderr.decode().split()[-1]) / 1024
    return wall, rss, proc.stdout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", type=Path, default=None)
    ap.add_argument("--texts", action="store_true", help="also time an export with texts")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="sb-export-"))
    work.mkdir(parents=True, exist_ok=True)
    log = work / f"bench-v4-{args.rounds}.jsonl"
    if not log.exists():
        t0 = time.perf_counter()
        generate(log, args.rounds)
        print(f"generated {args.rounds:,} rounds ({log.stat().st_size / 1e6:,.0f} MB) in "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
    timed("bench", "--json", "--log", str(log))  # the index, built once (warm below)
    kinds = ["bench", "export"] + (["texts"] if args.texts else [])
    walls: dict[str, list[float]] = {k: [] for k in kinds}
    rss: dict[str, list[float]] = {k: [] for k in kinds}
    bench: dict = {}
    for i in range(args.repeat):
        for kind in kinds:
            out = work / f"out-{kind}"
            shutil.rmtree(out, ignore_errors=True)
            if kind == "bench":
                w, r, stdout = timed("bench", "--json", "--log", str(log))
                bench = orjson.loads(stdout)
            else:
                extra = ["--texts"] if kind == "texts" else []
                w, r, _ = timed("export", "--log", str(log), "--parquet", str(out), "--quiet",
                                *extra)
            walls[kind].append(w)
            rss[kind].append(r)
            print(f"run {i + 1} {kind}: {w:.2f} s, {r:.0f} MB", flush=True)
    import duckdb

    size = log.stat().st_size
    print(f"\nlog: {args.rounds:,} rounds, {size / 1e6:,.0f} MB")
    for kind in kinds:
        line = (f"{kind:>6}: median {statistics.median(walls[kind]):.2f} s "
                f"(runs {', '.join(f'{w:.2f}' for w in walls[kind])}), peak RSS "
                f"{statistics.median(rss[kind]):.0f} MB")
        if kind != "bench":
            files = sorted((work / f"out-{kind}").glob("*.parquet"))
            psize = sum(f.stat().st_size for f in files)
            line += f", Parquet {psize / 1e6:,.1f} MB ({100 * psize / size:.1f} % of the log)"
            with duckdb.connect() as con:
                t0 = time.perf_counter()
                [row] = con.execute(QUERY, {"files": [str(f) for f in files]}).fetchall()
                q = time.perf_counter() - t0
            want = (bench["rounds"], bench["exact_match_rate"],
                    bench["latency_ms"]["v1"]["p95"], bench["latency_ms"]["v2"]["p95"])
            if tuple(row) != want:
                sys.exit(f"DuckDB on the export {row} != bench {want}")
            line += f"; README DuckDB query {q:.2f} s, equal to bench"
        print(line)
    ratio = statistics.median(walls["export"]) / statistics.median(walls["bench"])
    print(f"export / bench (warm): {ratio:.1f}x")


if __name__ == "__main__":
    main()
