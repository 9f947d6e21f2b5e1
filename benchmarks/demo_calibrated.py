"""The demo pair judged against llama.cpp's own numeric noise (is C++ vs Rust "just noise"?).

Usage: python benchmarks/demo_calibrated.py [--rounds 60] [--max-tokens 32] [--log PATH]

The demo's burn-in (v1 = xllamacpp, v2 = mistral.rs front, demo prompts, greedy,
forensics on) plus a third server, v1b = llama.cpp on another numeric path (2 threads,
batch 8), asked on every round (``--aa-every 1``) with ``--calibrate``: the thresholds
grow to the p99 of llama.cpp-vs-llama.cpp swings and drifts once 100 samples are in. Prints
the verdict counts at the default thresholds (the demo's own run, from its log if given)
next to the calibrated ones, and the A/A figures. Asserts nothing.
"""

from __future__ import annotations

import argparse
import collections
import tempfile
from pathlib import Path

import orjson

from shadow_burnin.app.demo import DemoOptions, demo_overrides, make_pair, write_demo_prompts
from shadow_burnin.cli.options import load_config
from shadow_burnin.cli.report import summary_of
from shadow_burnin.cli.run import execute
from shadow_burnin.io.servers.xllama import XllamaSettings, xllama_server


def verdicts(log: Path, after: int = 0) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    for line in log.read_bytes().splitlines():
        r = orjson.loads(line)
        if r.get("kind", "round") == "round" and r["bucket"] == "no-match" and \
                r["round"] > after and r.get("forensics"):
            counts[r["forensics"]["verdict"]] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--log", type=Path, help="a demo log to compare with (default thresholds)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="demo-calibrated-"))
    prompts = write_demo_prompts(work / "prompts.jsonl")
    pair = make_pair("cpp-rust", work / "servers", print)
    v1b = xllama_server(pair.v1.model_path or Path(), XllamaSettings(threads=2, batch=8,
                                                                      ubatch=8),
                        name="v1b", log_path=work / "servers" / "v1b.log")
    with pair.start(), v1b:
        opts = DemoOptions(rounds=args.rounds, max_tokens=args.max_tokens)
        overrides = demo_overrides(opts, (pair.v1.url, pair.v2.url), prompts)
        overrides["forensics"].update({"v1b": v1b.url, "aa_every": 1, "calibrate": True})
        log = work / "calibrated.jsonl"
        execute(load_config(None, overrides, log), new_run=True, quiet=True)
    summary = summary_of(log)
    if args.log is not None:
        print(f"demo log {args.log}, default thresholds: {dict(verdicts(args.log))}")
    print(f"calibrated against v1b (llama.cpp, 2 threads, batch 8), all rounds: "
          f"{dict(verdicts(log))}")
    print(f"  … rounds after the first 20 (thresholds settled): {dict(verdicts(log, 20))}")
    print(f"  A/A figures: {orjson.dumps(summary.aa).decode()}")
    taus = [orjson.loads(line).get("forensics", {}) for line in log.read_bytes().splitlines()]
    last = [t for t in taus if isinstance(t, dict) and "tau_tie" in t]
    if last:
        print(f"  final tau_tie {last[-1]['tau_tie']:.3f}, tau_drift {last[-1]['tau_drift']:.3f}")
    print(f"log: {log}")


if __name__ == "__main__":
    main()
