"""Labelled server pairs → per-round verdicts and the run-level decision, one table.

Usage: python benchmarks/verdicts/run.py [--rounds 20] [--max-tokens 16] [--pairs a,b]

v1 = xllamacpp on the demo GGUF (1 thread, default batch); each v2 is a variant on the
same file, labelled benign (a numeric-path change) or broken (a serving bug). Every pair
gets the same burn-in: the demo's completion prompts, greedy, ``cache_prompt`` off,
logprobs 5, one re-fire per divergence; no ``repeat_penalty`` is sent, so a server's own
default counts (that is the bug of the repeat-penalty pair). Prints, per pair: exact of
parity rounds, per-round verdict counts, the run-level decision, the three tail tests and
the largest swing and drift, side by side with the label (the reference). Asserts nothing.
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from shadow_burnin.app.demo import write_demo_prompts
from shadow_burnin.app.evidence import summary_of
from shadow_burnin.cli.options import load_config
from shadow_burnin.cli.run import execute
from shadow_burnin.io.servers.llama_build import ensure_model
from shadow_burnin.io.servers.xllama import XllamaSettings, xllama_server

MODEL_ROPE_BASE = 1_000_000.0  # gemma3.rope.freq_base in the demo GGUF
PAIRS: dict[str, tuple[str, XllamaSettings]] = {
    "threads-batch": ("benign", XllamaSettings(threads=2, batch=8, ubatch=8)),
    "ubatch-64": ("benign", XllamaSettings(ubatch=64)),
    "rope-x2": ("broken", XllamaSettings(rope_freq_base=2 * MODEL_ROPE_BASE)),
    "repeat-penalty-1.1": ("broken", XllamaSettings(repeat_penalty=1.1)),
}


def overrides(v1: str, v2: str, prompts: Path, rounds: int, max_tokens: int
              ) -> dict[str, dict[str, Any]]:
    return {
        "v1": {"url": v1}, "v2": {"url": v2},
        "request": {"api": "completions", "max_tokens": max_tokens, "stream": True,
                    "timeout": 300.0, "extra": {"cache_prompt": False}},
        "run": {"interval": 0.0, "rounds": rounds, "prompts": str(prompts), "seed": 1},
        "forensics": {"logprobs": 5, "refire": 1, "aa_every": 0},
    }


def verdict_counts(log: Path) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    for line in log.read_bytes().splitlines():
        r = orjson.loads(line)
        if r.get("bucket") == "no-match":
            counts[(r.get("forensics") or {}).get("verdict", "none")] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--pairs", default=",".join(PAIRS))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="verdicts-"))
    prompts = write_demo_prompts(work / "prompts.jsonl")
    model = ensure_model()
    rows = []
    with xllama_server(model, XllamaSettings(), name="v1", log_path=work / "v1.log") as v1:
        for name in args.pairs.split(","):
            label, settings = PAIRS[name]
            t0 = time.monotonic()
            with xllama_server(model, settings, name=name,
                               log_path=work / f"{name}.log") as v2:
                log = work / f"{name}.jsonl"
                cfg = load_config(None, overrides(v1.url, v2.url, prompts, args.rounds,
                                                  args.max_tokens), log)
                execute(cfg, new_run=True, quiet=True)
            s = summary_of(log)
            rv = (s.forensics or {}).get("run_verdict") or {}
            rows.append((name, label, s.counts["exact"], s.parity_rounds,
                         dict(verdict_counts(log)), rv, time.monotonic() - t0))
            print(f"{name}: done in {rows[-1][-1]:.0f} s — {rv.get('explanation')}",
                  flush=True)
    print()
    print("| pair | label | exact | per-round verdicts | run-level | outside / top-K miss /"
          " off-top-1 | max swing | max drift |")
    print("|---|---|---|---|---|---|---|---|")
    for name, label, exact, parity, verdicts, rv, _ in rows:
        tests = " / ".join(f"{t['observed']} of {t['n']}" for t in rv.get("tests", []))
        right = (rv.get("decision") == "noise") == (label == "benign")
        print(f"| {name} | {label} | {exact}/{parity} | "
              f"{', '.join(f'{k} {v}' for k, v in sorted(verdicts.items())) or '–'} | "
              f"{rv.get('decision')} ({'right' if right else 'WRONG'}) | {tests} | "
              f"{rv.get('swing_max')} | {rv.get('drift_max')} |")
    print(f"logs: {work}")


if __name__ == "__main__":
    main()
