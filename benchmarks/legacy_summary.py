"""The earlier bash tool's ``--summary`` (9 jq passes) against ``bench`` on 100 000 rounds.

Usage: python benchmarks/legacy_summary.py [--rounds 100000] [--repeat 3] [--keep DIR]

The earlier tool is not in this repository; its ``--summary`` is **reconstructed** here as
nine ``jq`` passes over its log (one per figure, as the issue describes it): rounds, exact,
prefix-only, no-match, v1 unreachable, v2 unreachable, v1 latency p50/p95, v2 latency
p50/p95, mean prefix match. The log is generated in the earlier tool's format (the shape of
``/work/shared/fixtures/legacy``: ``full_match``, ``prefix_match_chars``, ``v1_ms`` …, and
``{v1,v2}_unreachable`` lines for a side that gave nothing). Compared, each a fresh process,
interleaved, medians:

- ``jq``: the nine passes (one ``bash -c``);
- ``bench legacy``: ``bench --json --log OLD.jsonl`` (our reader converts the legacy log on
  the fly: no index for a legacy log);
- ``bench indexed``: ``bench --json`` on the same rounds after ``import-legacy`` (our format,
  warm round index) — what a user who moved over runs.

The package's bytecode is compiled first (``compileall``, as ``pip install`` leaves it).
Asserts no time; exits with a message if the round counts disagree.
"""

from __future__ import annotations

import argparse
import compileall
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

import shadow_burnin

PASSES = [
    "jq -s 'length'",
    "jq -s 'map(select(.full_match == true)) | length'",
    "jq -s 'map(select(.full_match == false and .prefix_match_chars > 0)) | length'",
    "jq -s 'map(select(.full_match == false and .prefix_match_chars == 0)) | length'",
    "jq -s 'map(select(.v1_unreachable == true)) | length'",
    "jq -s 'map(select(.v2_unreachable == true)) | length'",
    "jq -s '[.[] | .v1_ms | numbers] | sort | [.[length/2|floor], .[length*0.95|floor]]'",
    "jq -s '[.[] | .v2_ms | numbers] | sort | [.[length/2|floor], .[length*0.95|floor]]'",
    "jq -s '[.[] | .prefix_match_chars | numbers] | add / length'",
]
WORDS = ("the", "capital", "of", "France", "is", "Paris", "river", "Seine", "42", "x")


def generate(path: Path, rounds: int, seed: int = 3) -> None:
    rng = random.Random(seed)
    with open(path, "wb") as fh:
        for n in range(rounds):
            ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1_776_000_000 + n * 3))
            snippet = f"prompt {n % 40}"
            if rng.random() < 0.002:
                down = rng.choice([(True, False), (False, True), (True, True)])
                rec = {"ts": ts, "prompt_idx": n % 40, "prompt_snippet": snippet,
                       "v1_unreachable": down[0], "v2_unreachable": down[1]}
            else:
                text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 30)))
                other = text if rng.random() < 0.96 else text[: rng.randint(0, len(text))] + "Z"
                common = next((i for i, (a, b) in enumerate(zip(text, other, strict=False))
                               if a != b),
                              min(len(text), len(other)))
                rec = {"ts": ts, "prompt_idx": n % 40, "prompt_snippet": snippet,
                       "prefix_match_chars": common, "full_match": text == other,
                       "v1_ms": rng.randint(150, 900), "v2_ms": rng.randint(150, 950),
                       "v1_text": text, "v2_text": other, "v1_tokens": 12, "v2_tokens": 12}
            fh.write(orjson.dumps(rec) + b"\n")


def timed(argv: list[str]) -> tuple[float, bytes]:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"{argv[:3]} failed: {proc.stderr.decode()[-600:]}")
    return time.perf_counter() - t0, proc.stdout


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", type=Path)
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="sb-legacy-"))
    work.mkdir(parents=True, exist_ok=True)
    old, new = work / f"legacy-{args.rounds}.jsonl", work / f"imported-{args.rounds}.jsonl"
    if not old.exists():
        generate(old, args.rounds)
    compileall.compile_dir(Path(shadow_burnin.__file__).parent, quiet=1)
    sb = [sys.executable, "-m", "shadow_burnin"]
    if not new.exists():
        subprocess.run([*sb, "import-legacy", str(old), "--log", str(new)], check=True,
                       capture_output=True)
    script = " && ".join(f"{p} {old}" for p in PASSES)
    modes = {"jq (9 passes)": ["bash", "-c", script],
             "bench legacy": [*sb, "bench", "--json", "--log", str(old)],
             "bench indexed": [*sb, "bench", "--json", "--log", str(new)]}
    timed(modes["bench indexed"][:])  # the index built once: the runs below are warm
    times: dict[str, list[float]] = {m: [] for m in modes}
    outs: dict[str, bytes] = {}
    for _ in range(args.repeat):
        for mode, argv in modes.items():
            wall, out = timed(argv)
            times[mode].append(wall)
            outs[mode] = out
    jq_rounds = int(outs["jq (9 passes)"].split()[0])
    for mode in ("bench legacy", "bench indexed"):
        got = orjson.loads(outs[mode])["rounds"]
        if got != jq_rounds:
            sys.exit(f"{mode} counted {got} rounds, jq {jq_rounds}")
    med = {m: statistics.median(t) for m, t in times.items()}


    print(f"{args.rounds:,} rounds ({old.stat().st_size / 1e6:.0f} MB legacy log), "
          f"{args.repeat} interleaved runs, load {os.getloadavg()[0]:.1f}")
    for m, t in times.items():
        print(f"  {m:14s} median {med[m]:6.2f} s (runs {', '.join(f'{x:.2f}' for x in t)})"
              f"  = {med['jq (9 passes)'] / med[m]:5.1f}x the jq summary")
    print("  target (issue 13): >= 30x; the jq summary is a reconstruction (9 passes, above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
