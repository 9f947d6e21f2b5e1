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
            ("rounds", "diverged", "n", "dlp_sum", "move_n", "move_sum", "r_n", "r_sum",
             "r_sq"), 0.0))
        acc["rounds"] += 1
        mn, ms = _num(ts.get("move_n")), _num(ts.get("move_sum"))
        if mn > 0 and not math.isnan(ms):  # the round's own mean move: one unit per round
            acc["r_n"] += 1
            acc["r_sum"] += ms / mn
            acc["r_sq"] += (ms / mn) ** 2
        acc["diverged"] += r.get("bucket") != "exact"
        for k in ("n", "dlp_sum", "move_n", "move_sum"):
            v = _num(ts.get(k))
            acc[k] += 0.0 if math.isnan(v) else v
    for acc in out.values():
        acc["move_mean"] = acc["move_sum"] / acc["move_n"] if acc["move_n"] else math.nan
        acc["dlp_mean"] = acc["dlp_sum"] / acc["n"] if acc["n"] else math.nan
        k = acc["r_n"]
        mean = acc["r_sum"] / k if k else math.nan
        var = (acc["r_sq"] - k * mean * mean) / (k - 1) if k > 1 else math.nan
        acc["round_mean"], acc["round_se"] = mean, math.sqrt(max(var, 0.0) / k) \
            if k > 1 else math.nan
    return out


def contrast(cuts: dict[int, dict[str, float]]) -> tuple[float, float]:
    """The longest cut's mean per-round move over the shortest's, and the Welch z of
    their difference (rounds as units: tokens of one round are not independent)."""
    lo, hi = cuts[min(cuts)], cuts[max(cuts)]
    ratio = hi["round_mean"] / lo["round_mean"] if lo["round_mean"] else math.nan
    se = math.hypot(lo["round_se"], hi["round_se"])
    z = (hi["round_mean"] - lo["round_mean"]) / se if se else math.nan
    return ratio, z


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
        ratio, z = contrast(cuts)
        print(f"{name:32} long/short per-round move ratio {ratio:.2f}, Welch z {z:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
