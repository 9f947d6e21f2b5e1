"""Start-up A/B of two source trees: ``import shadow_burnin.cli`` and ``bench --json``
on a log, fresh processes, interleaved (A first on even runs), medians side by side;
then each module's own import time (``python -X importtime``, median over the runs).

Usage: python benchmarks/startup_ab.py A_SRC B_SRC --log LOG [--runs 15] [--imports 9]

A_SRC and B_SRC are ``src`` directories (put first on PYTHONPATH; compile both first
with ``python -m compileall -q DIR`` so that neither pays for compiling). The log is
read only (its index is built beside it on the first run if missing). Asserts no time;
it exits with a message if a command fails or the two trees print different output.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = Path(sys.executable).with_name("shadow-burnin")
LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|\s*(\S+)")


def once(src: str, argv: list[str]) -> tuple[float, bytes]:
    env = dict(os.environ, PYTHONPATH=src)
    t0 = time.perf_counter()
    p = subprocess.run(argv, env=env, capture_output=True, check=False)
    dt = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{argv[:3]} failed with {src}: {p.stderr.decode()[-300:]}")
    return dt, p.stdout


def walls(a: str, b: str, log: str, runs: int) -> None:
    cases = {"import shadow_burnin.cli": [sys.executable, "-c", "import shadow_burnin.cli"],
             "bench --json": [str(SCRIPT), "bench", "--json", "--log", log]}
    for argv in cases.values():  # page cache and index warm for both
        once(a, argv), once(b, argv)
    times: dict[tuple[str, str], list[float]] = {}
    outs: dict[str, set[bytes]] = {"A": set(), "B": set()}
    for i in range(runs):
        order = [("A", a), ("B", b)] if i % 2 == 0 else [("B", b), ("A", a)]
        for case, argv in cases.items():
            for name, src in order:
                dt, out = once(src, argv)
                times.setdefault((case, name), []).append(dt)
                outs[name].add(out)
    print(f"wall, {runs} fresh processes each, interleaved: A={a}  B={b}")
    for case in cases:
        ma, mb = (statistics.median(times[(case, n)]) for n in ("A", "B"))
        print(f"  {case:26s} A {ma * 1e3:7.1f} ms   B {mb * 1e3:7.1f} ms   "
              f"B-A {(mb - ma) * 1e3:+6.1f} ms   B/A {mb / ma:.3f}")
    if outs["A"] != outs["B"]:
        raise SystemExit("the two trees print different output")
    print("  outputs identical (A and B, every run)")


def self_times(src: str, code: str, runs: int) -> dict[str, float]:
    per: dict[str, list[int]] = {}
    for _ in range(runs):
        p = subprocess.run([sys.executable, "-X", "importtime", "-c", code],
                           env=dict(os.environ, PYTHONPATH=src), stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True, check=False)
        for m in LINE.finditer(p.stderr):
            per.setdefault(m.group(3), []).append(int(m.group(1)))
    return {k: statistics.median(v + [0] * (runs - len(v))) for k, v in per.items()}


def imports(a: str, b: str, log: str, runs: int, top: int) -> None:
    bench = (f"import sys\nsys.argv = ['shadow-burnin', 'bench', '--json', '--log', {log!r}]\n"
             "from shadow_burnin.cli import main\ntry:\n    main()\nexcept SystemExit:\n"
             "    pass\n")
    for title, code in (("import shadow_burnin.cli", "import shadow_burnin.cli"),
                        ("bench --json (imports on its path)", bench)):
        ta, tb = self_times(a, code, runs), self_times(b, code, runs)
        sa, sb = sum(ta.values()) / 1e3, sum(tb.values()) / 1e3
        print(f"\n{title}: sum of the modules' own times (median of {runs}) "
              f"A {sa:.1f} ms, B {sb:.1f} ms ({sb - sa:+.1f} ms)")
        print("  only with A:", ", ".join(sorted(set(ta) - set(tb))) or "-")
        print("  only with B:", ", ".join(sorted(set(tb) - set(ta))) or "-")
        rows = sorted(set(ta) | set(tb), key=lambda k: -abs(tb.get(k, 0) - ta.get(k, 0)))
        print(f"  {'module':44s} {'A µs':>7s} {'B µs':>7s} {'B-A':>7s}")
        for k in rows[:top]:
            print(f"  {k:44s} {ta.get(k, 0):7.0f} {tb.get(k, 0):7.0f} "
                  f"{tb.get(k, 0) - ta.get(k, 0):+7.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a_src")
    ap.add_argument("b_src")
    ap.add_argument("--log", required=True)
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--imports", type=int, default=9, help="runs for -X importtime (0: none)")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    a, b = (str(Path(s).resolve()) for s in (args.a_src, args.b_src))
    log = str(Path(args.log).resolve())
    walls(a, b, log, args.runs)
    if args.imports:
        imports(a, b, log, args.imports, args.top)


if __name__ == "__main__":
    main()
