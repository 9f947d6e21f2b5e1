"""`bench` over a generated 1 000 000-round log: wall time and peak RSS.

Usage: python benchmarks/bench_1m.py [--rounds 1000000] [--repeat 3] [--keep DIR]
Target (issue 2): < 5 s and < 1 GB RSS. Prints the median of the repeats beside that
reference; asserts no time (it exits with a message only if `bench` fails or miscounts).
The log is shaped like a real one, in the current layout (one line per round: ``wc -l``
is the number of rounds): non-exact rounds carry forensics and a re-fire, every 10th
round carries its A/A pair inside it (``--aa-every 10``). Each round's bucket, divergence
byte and prefix are computed by ``core.compare.classify`` from the two texts, as the
runner does (the generator used to label a few prefix-only pairs ``no-match``).
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

from shadow_burnin.core.compare import classify

WORDS = ("the", "capital", "of", "France", "is", "Paris", "which", "river", "Seine", "café",
         "日本", "naïve", "def", "return", "x", "=", "42", "🙂", "\n")


def texts(rng: random.Random) -> tuple[str, str, float]:
    """v1's text, v2's text (3 % with "DIFF" inserted somewhere, which is prefix-only when
    it lands at the end; 1 % extended) and the roll that chose."""
    text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(10, 40)))
    roll = rng.random()
    other = text
    if roll < 0.03:
        cut = rng.randint(0, len(text))
        other = text[:cut] + "DIFF" + text[cut:]
    elif roll < 0.04:
        other = text + " more"
    return text, other, roll


def generate(path: Path, rounds: int, seed: int = 1, rng: random.Random | None = None) -> None:
    rng = rng or random.Random(seed)
    cats = [f"cat-{i:02d}" for i in range(32)]
    with open(path, "wb") as fh:
        for n in range(1, rounds + 1):
            text, other, roll = texts(rng)
            cmp = classify(text, other)  # the runner's own classification
            bucket, div, pm = cmp.bucket, cmp.divergence_byte, cmp.prefix_match_chars
            # latencies rounded to the microsecond, as the client writes them
            side1 = {"text": text, "latency_ms": round(rng.uniform(300, 900), 3),
                     "ttft_ms": round(rng.uniform(20, 90), 3), "status": 200,
                     "finish_reason": "stop", "completion_tokens": 30, "error": None}
            side2 = dict(side1, text=other, latency_ms=round(rng.uniform(300, 950), 3))
            if roll > 0.999:
                side2 = {"text": None, "latency_ms": 1.0, "ttft_ms": None, "status": None,
                         "finish_reason": None, "completion_tokens": None,
                         "error": "connection-refused: Connection refused"}
                bucket, div, pm = "v2-unreachable", None, None
            ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(1_780_000_000 + n * 2.5))
            cat = cats[n % 32]
            record = {
                "schema": 1, "round": n, "ts": f"{ts}.{n % 1000:03d}Z",
                "prompt_id": f"{cat}-{n % 7:02d}", "category": cat, "bucket": bucket,
                "divergence_byte": div, "prefix_match_chars": pm, "v1": side1, "v2": side2,
                "first": "v1" if n % 2 else "v2", "setup": "0123456789abcdef", "seed": 7,
                "cursor": n - 1}
            if bucket in ("no-match", "prefix-only"):  # as the runner's forensics write them
                record["forensics"] = {"divergence_token": rng.randint(0, 30), "swing": 0.04,
                                       "verdict": rng.choice(["near-tie", "regression"])}
                record["refire"] = {"outcome": "reproducible", "n": 1}
            if n % 10 == 0:  # the A/A pair of every 10th round, inside it (--aa-every 10)
                record["aa"] = {"ts": record["ts"], "target": "v1", "bucket": "exact",
                                "divergence_byte": None, "prefix_match_chars": len(text),
                                "a": side1, "b": side1}
            fh.write(orjson.dumps(record) + b"\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", type=Path, default=None)
    args = ap.parse_args()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="sb-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / f"bench-v4-{args.rounds}.jsonl"
    if not log.exists():
        t0 = time.perf_counter()
        generate(log, args.rounds)
        print(f"generated {args.rounds:,} rounds ({log.stat().st_size / 1e6:,.0f} MB) "
              f"in {time.perf_counter() - t0:.1f} s")
    times, rss = [], []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c",
             "import resource,sys;from shadow_burnin.cli import cli;"
             "sys.argv=['shadow-burnin','bench','--json','--log',sys.argv[1]];"
             "import atexit;atexit.register(lambda: print("
             "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr));cli()",
             str(log)],
            capture_output=True, check=False)
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            sys.exit(f"bench failed: {proc.stderr.decode()[-500:]}")
        rss.append(int(proc.stderr.decode().split()[-1]) / 1024)
        counted = orjson.loads(proc.stdout)["rounds"]
        if counted != args.rounds:
            sys.exit(f"bench counted {counted:,} rounds, not {args.rounds:,}")
    print(f"bench --json over {args.rounds:,} rounds: median {statistics.median(times):.2f} s "
          f"(runs: {', '.join(f'{t:.2f}' for t in times)}; reference < 5 s), peak RSS median "
          f"{statistics.median(rss):.0f} MB (reference < 1024 MB)")


if __name__ == "__main__":
    main()


def replicate(source: Path, path: Path, copies: int) -> int:
    """A long log made fast from a generated one: ``copies`` times its lines, each copy's
    round numbers, cursors and start times moved on so the result reads as one run
    (rounds 1..N in order, times ascending). Returns the rounds written."""
    import re

    lines = source.read_bytes().splitlines(keepends=True)
    n = len(lines)
    head = re.compile(rb'^\{"schema":1,"round":(\d+),"ts":"([^"]+)"')
    span = 2.5 * n  # the generator's rounds are 2.5 s apart
    with open(path, "wb") as fh:
        for c in range(copies):
            shift = c * n
            out = []
            for line in lines:
                m = head.match(line)
                if m is None:
                    raise ValueError("not a bench_1m log line")
                number = int(m.group(1)) + shift
                stamp = m.group(2).decode()
                t = time.mktime(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")) + c * span
                ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t)) + stamp[19:]
                rest = line[m.end():].replace(b'"cursor":%d' % (number - shift - 1),
                                              b'"cursor":%d' % (number - 1))
                out.append(b'{"schema":1,"round":%d,"ts":"%s"' % (number, ts.encode())
                           + rest)
            fh.write(b"".join(out))
    return n * copies
