"""SIGKILL `shadow-burnin run` many times over one log and check everything after each kill.

Usage: python scripts/crash_kills.py [--kills 200] [--seed 1] [--keep DIR]

Same harness as tests/io/log/test_crash.py (CrashRun): random-moment kills of the whole
process group, kills inside the state write (between the temp file and the rename), in
fsync and in write, partial lines appended by hand, clean restarts in between. Prints the
figures; exits 1 at the first failed check (with the reason).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import reap_process, spawn_scripted_process  # noqa: E402
from tests.io.log.test_crash import CrashRun  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", type=Path, help="work in this directory and keep it")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="crash-kills-"))
    work.mkdir(parents=True, exist_ok=True)
    v1, p1 = spawn_scripted_process()
    v2, p2 = spawn_scripted_process(diverge_after=50)
    run = CrashRun(work, v1, v2, seed=args.seed)
    t0 = time.monotonic()
    failure = None
    try:
        while run.fig.total_kills < args.kills:
            if run.step() != "clean" and run.fig.total_kills % 20 == 0:
                print(f"  {run.fig.total_kills} kills, {run.fig.rounds} rounds in the log",
                      flush=True)
        run.clean(2, 3)
    except AssertionError as exc:
        failure = f"{type(exc).__name__}: {exc}"
    finally:
        reap_process(p1)
        reap_process(p2)
    elapsed = time.monotonic() - t0
    fig = run.fig
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(fig.kills.items()))
    print(f"kills: {fig.total_kills} ({kinds})")
    print(f"clean restarts: {fig.clean_restarts}")
    print(f"partial lines written by hand: {fig.torn_written}; unterminated tails left by "
          f"a kill: {fig.torn_by_kill}; tails moved twice: {fig.torn_duplicates}")
    print(f"stale .state.tmp seen after a kill: {fig.stale_tmp_seen}")
    print(f"rounds in the log: {fig.rounds}; lines checked (sum over checks): "
          f"{fig.lines_checked}")
    print(f"elapsed: {elapsed:.0f} s ({elapsed / max(1, fig.total_kills):.2f} s per kill)")
    print(f"failure: {failure}" if failure else "failures: none")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failure else 0


if __name__ == "__main__":
    sys.exit(main())
