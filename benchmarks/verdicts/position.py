"""Does the context length separate a wrong RoPE base from a benign kernel change?

Usage::

    python benchmarks/verdicts/position.py DIR [DIR …] [--json]

Reads the pair logs a ``run.py --prompts long`` run kept in DIR (``<pair>.jsonl``; the
long set cuts the same documents at 32, 192 and 768 words, categories ``long-w<words>``)
and prints, per pair and per cut, the matched-token figures of the rounds' ``tokstats``:
tokens, mean margin move, mean |Δ logprob| of the chosen token, and the share of rounds
that diverged, then the ratio of the longest cut's mean move to the shortest's.

The physics: a wrong RoPE base rotates queries against keys by an angle that grows with
their distance, so its error grows with the context; kernel and engine noise does not.
A ratio near 1 is a flat error (numeric noise), a large ratio one that grows with length.
Prints figures only; asserts nothing.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path
from typing import Any

import orjson

CUT = re.compile(r"^(?:long-w|recall-r)(\d+)$")


def _num(x: Any) -> float:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else math.nan


def by_cut(log: Path) -> dict[int, dict[str, float]]:
    """Per cut (words): rounds, diverged rounds, tokens, mean move, mean |Δlp|."""
    out: dict[int, dict[str, float]] = {}
    for line in log.read_bytes().splitlines():
        if not line.strip():
            continue
        r = orjson.loads(line)
        m = CUT.match(str(r.get("category", "")))
        ts = r.get("tokstats")
        if m is None or not isinstance(ts, dict):
            continue
        acc = out.setdefault(int(m.group(1)), dict.fromkeys(
            ("rounds", "diverged", "n", "dlp_sum", "move_n", "move_sum"), 0.0))
        acc["rounds"] += 1
        acc["diverged"] += r.get("bucket") != "exact"
        for k in ("n", "dlp_sum", "move_n", "move_sum"):
            v = _num(ts.get(k))
            acc[k] += 0.0 if math.isnan(v) else v
    for acc in out.values():
        acc["move_mean"] = acc["move_sum"] / acc["move_n"] if acc["move_n"] else math.nan
        acc["dlp_mean"] = acc["dlp_sum"] / acc["n"] if acc["n"] else math.nan
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dirs", nargs="+", type=Path)
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = ap.parse_args(argv)
    rows: dict[str, dict[int, dict[str, float]]] = {}
    for d in args.dirs:
        for log in sorted(d.glob("*.jsonl")):
            if log.name.startswith("prompts-") or ".events" in log.name:
                continue
            cuts = by_cut(log)
            if cuts:
                rows[f"{d.name}/{log.stem}"] = cuts
    if args.json:
        print(orjson.dumps({k: {str(c): v for c, v in cuts.items()}
                            for k, cuts in rows.items()}, option=orjson.OPT_INDENT_2).decode())
        return 0
    print(f"{'pair':32} {'cut':>5} {'rounds':>6} {'div':>4} {'tokens':>6} "
          f"{'move':>7} {'|Δlp|':>7}")
    for name, cuts in rows.items():
        for c in sorted(cuts):
            a = cuts[c]
            print(f"{name:32} {c:>5} {a['rounds']:>6.0f} {a['diverged']:>4.0f} "
                  f"{a['n']:>6.0f} {a['move_mean']:>7.3f} {a['dlp_mean']:>7.3f}")
        lo, hi = cuts[min(cuts)], cuts[max(cuts)]
        ratio = hi["move_mean"] / lo["move_mean"] if lo["move_mean"] else math.nan
        print(f"{name:32} long/short move ratio {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
