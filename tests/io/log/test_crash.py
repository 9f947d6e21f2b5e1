"""Crash safety: SIGKILL ``run`` at random moments (and inside its state write), restart,
and check the log and the state after every kill.

``CrashRun`` is the harness; ``scripts/crash_kills.py`` drives it for hundreds of kills.
After each runner process ends (killed or not) ``check()`` asserts, on the files at rest:

- every complete line of the log parses; an unterminated tail (a kill mid-write, or one we
  wrote ourselves) is tolerated only until the next open, which moves it to ``<log>.torn``;
- rounds are exactly 1..N (no gap, no duplicate), ``cursor == round - 1``, one seed/setup;
- no committed round is lost or rewritten: the log starts with every line seen before;
- the state file is always whole JSON describing exactly a prefix of the log (it may lag
  the log after a kill between the append and the rename; never leads, never garbage);
- a restart (Store.open on a copy, the code ``run`` uses) recovers a state equal to a
  recount of the whole log; a leftover ``.state.tmp`` does not matter.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from shadow_burnin.core.records import BUCKETS
from shadow_burnin.io.log.index import decode as decode_index
from shadow_burnin.io.log.index import load as load_index
from shadow_burnin.io.log.sidecars import index_path
from shadow_burnin.io.log.store import Store
from tests.cli.conftest import write_prompts
from tests.io.log.test_index import assert_index_equal

WRAPPER = '''\
"""python wrapper.py SPEC ARGS...: shadow-burnin ARGS with one os function booby-trapped.

SPEC: "none"; "kill:NAME:N" SIGKILLs this process just before the Nth call of os.NAME
(os.replace: the Nth of the state file's renames; the round index's are not counted);
"enospc:write:N" makes the Nth and later os.write calls fail with ENOSPC;
"short:write:N" makes the Nth os.write write half its bytes, later ones fail with ENOSPC.
"""
import errno
import os
import signal
import sys

spec, args = sys.argv[1], sys.argv[2:]
if spec != "none":
    action, name, nth = spec.split(":")
    nth = int(nth)
    real = getattr(os, name)
    calls = 0

    def trap(*a, **kw):
        global calls
        if name == "replace" and not str(a[1]).endswith(".state"):
            return real(*a, **kw)  # the round index's atomic writes: not the state's
        calls += 1
        if action == "kill" and calls == nth:
            os.kill(os.getpid(), signal.SIGKILL)
        if action in ("enospc", "short") and calls >= nth:
            if action == "short" and calls == nth:
                fd, data = a
                return real(fd, bytes(data)[: max(1, len(data) // 2)])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*a, **kw)

    setattr(os, name, trap)
sys.argv = ["shadow-burnin", *args]
from shadow_burnin.cli import main

main()
'''
MAX_CONCURRENCY = 4


def write_wrapper(directory: Path) -> Path:
    path = directory / "wrapper.py"
    path.write_text(WRAPPER)
    return path


def recount(records: list[dict[str, Any]]) -> dict[str, Any]:
    """last_round, counts and cursor as a state must have them, from the log's records."""
    counts = dict.fromkeys(BUCKETS, 0)
    last, cursor = 0, 0
    for r in records:
        if r.get("kind", "round") == "round":
            last, cursor = r["round"], r["cursor"] + 1
            counts[r["bucket"]] += 1
    return {"last_round": last, "counts": counts, "cursor": cursor}


def parse_lines(data: bytes) -> list[dict[str, Any]]:
    """Every line of ``data`` (complete lines only) as a record; fails on any bad line."""
    out = []
    for number, line in enumerate(data.splitlines(), 1):
        record = orjson.loads(line)
        assert isinstance(record, dict), (number, line[:80])
        assert record.get("kind", "round") != "round" or record["schema"] == 1, number
        out.append(record)
    return out


def check_rounds(records: list[dict[str, Any]]) -> int:
    rounds = [r for r in records if r.get("kind", "round") == "round"]
    assert [r["round"] for r in rounds] == list(range(1, len(rounds) + 1)), "gap/duplicate"
    assert all(r["cursor"] == r["round"] - 1 for r in rounds), "cursor out of step"
    assert len({(r["seed"], r["setup"]) for r in rounds}) <= 1, "seed/setup changed"
    return len(rounds)


def check_state_snapshot(state_path: Path, complete: bytes) -> dict[str, Any] | None:
    """The state (if any) is whole JSON describing exactly ``complete[:log_size]``."""
    if not state_path.exists():
        return None
    st = orjson.loads(state_path.read_bytes())
    size = st["log_size"]
    assert 0 <= size <= len(complete), f"state log_size {size} beyond the log"
    assert size == 0 or complete[size - 1:size] == b"\n", "state log_size mid-line"
    expected = recount(parse_lines(complete[:size]))
    assert {k: st[k] for k in expected} == expected, (st, expected)
    return st


def restart_state(log: Path, state: Path, scratch: Path) -> dict[str, Any]:
    """What a restart would start from: Store.open on copies of the log and state."""
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    for src in (log, state):
        if src.exists():
            shutil.copyfile(src, scratch / src.name)
    store = Store(scratch / log.name, scratch / state.name)
    try:
        store.open()
        st = store.state.to_json()
    finally:
        store.close()
    st["log_bytes"] = (scratch / log.name).read_bytes()
    return st


@dataclass
class Figures:
    kills: Counter[str] = field(default_factory=Counter)
    clean_restarts: int = 0
    torn_written: int = 0  # partial lines we appended ourselves
    torn_by_kill: int = 0  # unterminated tails a SIGKILL left behind
    torn_duplicates: int = 0  # a tail moved twice (killed between .torn write and cut)
    stale_tmp_seen: int = 0
    lines_checked: int = 0
    rounds: int = 0
    index_covered: int = 0  # log bytes the index file on disk covered at the last check
    index_behind: int = 0  # checks that found the index file behind the log (caught up)

    @property
    def total_kills(self) -> int:
        return sum(self.kills.values())


class CrashRun:
    """One log under repeated SIGKILLs; ``step()`` = one runner process + ``check()``."""

    def __init__(self, work: Path, v1: str, v2: str, seed: int = 1) -> None:
        self.work, self.v1, self.v2 = work, v1, v2
        self.plan = random.Random(seed)  # what each step does: independent of timing
        self.rng = random.Random(seed + 1)  # when to kill, where to cut a line
        self.log, self.state = work / "crash.jsonl", work / "crash.state"
        self.tmp = work / "crash.state.tmp"
        self.torn = work / "crash.jsonl.torn"
        self.prompts = write_prompts(work / "small.jsonl")
        self.wrapper = write_wrapper(work)
        self.committed = b""
        self.tails: set[bytes] = set()  # every unterminated tail ever seen at the log's end
        self.fig = Figures()

    def argv(self, spec: str, concurrency: int, rounds: int | None) -> list[str]:
        argv = [sys.executable, str(self.wrapper), spec, "run", "--v1", self.v1, "--v2",
                self.v2, "--interval", "0", "--concurrency", str(concurrency), "--log",
                str(self.log), "--prompts", str(self.prompts), "--quiet"]
        return argv + (["--rounds", str(rounds)] if rounds else [])

    def clean(self, concurrency: int, rounds: int) -> None:
        """A restart that runs ``rounds`` rounds and exits 0, then the strict check."""
        proc = subprocess.run(self.argv("none", concurrency, rounds), capture_output=True,
                              timeout=120)
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-1500:]
        self.check(strict=True)

    def step(self) -> str:
        """Start ``run``, end it one way or another, check; returns what was done."""
        plan = self.plan
        kind = plan.choices(["timed", "early", "kill:replace", "kill:fsync", "kill:write",
                             "clean"], weights=[45, 12, 15, 8, 8, 12])[0]
        spec = f"{kind}:{plan.randint(1, 6)}" if kind.startswith("kill:") else "none"
        rounds, concurrency = plan.randint(1, 5), plan.randint(1, MAX_CONCURRENCY)
        size0 = self.log.stat().st_size if self.log.exists() else 0
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(self.argv(spec, concurrency,
                                              rounds if kind == "clean" else None),
                                    stdout=subprocess.DEVNULL, stderr=err,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
            try:
                code = self._end(proc, kind, size0)
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            err.seek(0)
            tail = err.read()[-1500:].decode(errors="replace")
        expected = 0 if kind == "clean" else -signal.SIGKILL
        assert code == expected, f"{kind} ({spec}): exit {code}\n{tail}"
        if kind == "clean":
            self.fig.clean_restarts += 1
        else:
            self.fig.kills[kind] += 1
        self.check(strict=kind == "clean", replace_kill=kind == "kill:replace")
        if kind != "clean" and plan.random() < 0.3:
            self.write_torn()
        return kind

    def _end(self, proc: subprocess.Popen[bytes], kind: str, size0: int) -> int:
        if kind in ("timed", "early"):
            if kind == "timed":  # after the restart committed something, at a random moment
                deadline = time.monotonic() + 60
                while (not self.log.exists() or self.log.stat().st_size <= size0) \
                        and proc.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert proc.poll() is None, "the runner exited on its own"
            time.sleep(self.rng.uniform(0.0, 0.3 if kind == "timed" else 1.5))
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            else:  # "early" never outlives 1.5 s of an endless run; fail below
                return proc.returncode
        return proc.wait(timeout=120)

    def write_torn(self) -> None:
        """Append a partial line (a copy of the last line, cut), as a crash would."""
        data = self.log.read_bytes() if self.log.exists() else b""
        if data and not data.endswith(b"\n"):
            return
        last = data.splitlines()[-1] if data else b'{"schema":1,"round":1,"ts":"2026"}'
        torn = last[: self.rng.randint(1, len(last) - 1)]
        with open(self.log, "ab") as fh:
            fh.write(torn)
        self.tails.add(torn)
        self.fig.torn_written += 1

    def check(self, *, strict: bool = False, replace_kill: bool = False) -> None:
        data = self.log.read_bytes() if self.log.exists() else b""
        end = data.rfind(b"\n") + 1
        complete, tail = data[:end], data[end:]
        assert complete.startswith(self.committed), "a committed round was lost or rewritten"
        records = parse_lines(complete)
        n = check_rounds(records)
        if tail and tail not in self.tails:
            self.tails.add(tail)
            self.fig.torn_by_kill += 1
        moved = self.torn.read_bytes().split(b"\n")[:-1] if self.torn.exists() else []
        assert set(moved) <= self.tails, "something that was no torn tail went to .torn"
        self.fig.torn_duplicates = len(moved) - len(set(moved))
        st = check_state_snapshot(self.state, complete)
        if replace_kill:  # killed between the temp file and the rename
            tmp = orjson.loads(self.tmp.read_bytes())
            assert tmp["log_size"] == len(complete) and tmp["last_round"] == n
            assert st is None or st["last_round"] < n
        if self.tmp.exists():
            self.fig.stale_tmp_seen += 1
        again = restart_state(self.log, self.state, self.work / "restart")
        assert again["log_bytes"] == complete, "the restart did not cut exactly the torn tail"
        want = recount(records)
        assert {k: again[k] for k in want} == want and again["log_size"] == len(complete)
        # the round index as the runner left it (its commit thread appends a segment
        # after each fsync; a kill may tear one): read without saving, caught up from the
        # log where it lacks rounds, it equals one rebuilt from the log as restarted
        kept = load_index(self.log, save=False)
        assert kept.covered == len(complete) and not kept.notes, kept.notes
        assert_index_equal(kept, load_index(self.work / "restart" / self.log.name, save=False))
        on_disk = decode_index(index_path(self.log).read_bytes()) \
            if index_path(self.log).exists() else None
        self.fig.index_covered = on_disk.covered if on_disk else 0
        self.fig.index_behind += self.fig.index_covered < len(complete)
        if strict:  # a clean run leaves an index that covers the whole log, by itself
            assert on_disk is not None and on_disk.covered == len(complete)
            assert not tail and not self.tmp.exists()
            assert st is not None and st["log_size"] == len(data)
            assert {k: st[k] for k in want} == want
        self.committed = complete
        self.fig.lines_checked += len(records)
        self.fig.rounds = n


def test_kills_and_restarts(tmp_path: Path, spawn_scripted: Any) -> None:
    v1, _ = spawn_scripted()
    v2, _ = spawn_scripted(diverge_after=8)  # exact first, then prefix-only
    run = CrashRun(tmp_path, v1, v2, seed=20261134)  # a seed whose 22 kills hold every kind
    while run.fig.total_kills < 22:
        run.step()
    run.clean(2, 3)
    fig = run.fig
    assert set(fig.kills) == {"timed", "early", "kill:replace", "kill:fsync", "kill:write"}
    assert fig.clean_restarts > 0 and fig.torn_written > 0
    counts = orjson.loads(run.state.read_bytes())["counts"]
    assert counts["exact"] > 0 and counts["prefix-only"] > 0  # buckets vary
    assert fig.rounds >= fig.kills["timed"]  # each timed kill came after a commit


def test_kill_between_temp_state_and_rename(tmp_path: Path, spawn_scripted: Any) -> None:
    v1, _ = spawn_scripted()
    run = CrashRun(tmp_path, v1, v1)
    # the state's renames (os.replace into the state file; the round index's atomic
    # writes are not counted), one per commit: the 3rd is the 3rd commit's state
    proc = subprocess.run(run.argv("kill:replace:3", 1, None), capture_output=True,
                          timeout=120)
    assert proc.returncode == -signal.SIGKILL
    run.check(replace_kill=True)
    # 2 renames (commits) happened; the 3rd commit's temp file describes the whole log.
    # A commit may hold 2 rounds even at concurrency 1: the next round is played while
    # the commit thread writes.
    renamed = orjson.loads(run.state.read_bytes())["last_round"]
    tmp = orjson.loads(run.tmp.read_bytes())
    assert 2 <= renamed < tmp["last_round"] == run.fig.rounds
    run.clean(1, 2)  # caught up from the log; the stale temp file replaced
    assert run.fig.rounds == tmp["last_round"] + 2


def test_torn_line_then_restart(tmp_path: Path, spawn_scripted: Any) -> None:
    v1, _ = spawn_scripted()
    run = CrashRun(tmp_path, v1, v1)
    run.clean(2, 4)
    run.write_torn()
    (torn,) = run.tails
    run.clean(1, 2)
    assert run.torn.read_bytes() == torn + b"\n" and run.fig.rounds == 6
