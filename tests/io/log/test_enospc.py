"""Disk full: ``run`` stops with one clear line on stderr and exit 2, the log and the state
stay valid, and once space is freed a restart continues where the log ends.

Real: the log lives on a 256 KiB tmpfs (mounted here: CI runs as root) that a filler file
mostly fills; ``rm filler`` frees the space. Should ``mount`` be refused, the same test runs
with RLIMIT_FSIZE instead (EFBIG, "File too large"; SIGXFSZ ignored) -- also a real
kernel limit. Injected (deterministic): the wrapper of test_crash makes a chosen os call
fail with ENOSPC, or write half its bytes first, at the log append or at the state write.
"""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.cli.conftest import write_prompts
from tests.io.log.test_crash import (
    check_rounds,
    check_state_snapshot,
    parse_lines,
    recount,
    write_wrapper,
)

FS_BYTES = 256 * 1024
FILLER_BYTES = 176 * 1024


@dataclass
class Full:
    """A directory whose filesystem (or the writer's file size limit) is nearly full."""

    dir: Path
    reason: str  # what the error message must say
    limit: Callable[[], None] | None  # preexec_fn for the runner while "full"
    free: Callable[[], None]


@pytest.fixture
def full(tmp_path: Path) -> Iterator[Full]:
    mnt = tmp_path / "fs"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={FS_BYTES}", "tmpfs",
                              str(mnt)], capture_output=True).returncode == 0
    if mounted:
        filler = mnt / "filler"
        filler.write_bytes(b"\0" * FILLER_BYTES)
        try:
            yield Full(mnt, "disk full", None, filler.unlink)
        finally:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
        return
    limited = [True]

    def limit() -> None:
        if limited[0]:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (FS_BYTES - FILLER_BYTES,) * 2)

    yield Full(mnt, "File too large", limit, lambda: limited.__setitem__(0, False))


def run_cli(argv: list[str], preexec: Callable[[], None] | None = None) -> tuple[int, str]:
    proc = subprocess.run(argv, capture_output=True, timeout=300, preexec_fn=preexec)
    return proc.returncode, proc.stderr.decode(errors="replace")


def one_error_line(stderr: str) -> str:
    """The run's stderr holds exactly one error line (warnings aside) and no traceback."""
    assert "Traceback" not in stderr, stderr
    errors = [x for x in stderr.splitlines() if x.startswith("shadow-burnin: error:")]
    assert len(errors) == 1 and stderr.rstrip().endswith(errors[0]), stderr
    return errors[0]


def check_valid(log: Path, state: Path, before: bytes = b"") -> tuple[int, dict[str, Any]]:
    """Every line parses, no torn tail, rounds 1..N, the state is an exact snapshot of a
    prefix; the log still starts with ``before``. Returns (N, state)."""
    data = log.read_bytes()
    assert data.endswith(b"\n") and data.startswith(before)
    n = check_rounds(parse_lines(data))
    st = check_state_snapshot(state, data)
    assert st is not None
    return n, st


def run_argv(python: list[str], v1: str, v2: str, log: Path, prompts: Path,
             *extra: str) -> list[str]:
    return [*python, "run", "--v1", v1, "--v2", v2, "--interval", "0", "--log", str(log),
            "--prompts", str(prompts), "--quiet", *extra]


CLI = [sys.executable, "-m", "shadow_burnin"]


def test_disk_full_real_then_freed(tmp_path: Path, full: Full, spawn_scripted: Any) -> None:
    v1, _ = spawn_scripted()
    v2, _ = spawn_scripted(diverge_after=10)
    log, state = full.dir / "b.jsonl", full.dir / "b.state"
    argv = run_argv(CLI, v1, v2, log, write_prompts(tmp_path / "p.jsonl"), "--concurrency", "2")
    code, err = run_cli(argv, full.limit)  # no --rounds: runs until the disk is full
    line = one_error_line(err)
    assert code == 2 and full.reason in line and str(full.dir) in line, err
    n, _st = check_valid(log, state)
    assert n > 20  # it did fill the space with rounds first
    committed = log.read_bytes()
    code, err = run_cli(argv, full.limit)  # restart while still full: same clean refusal
    assert code == 2 and full.reason in one_error_line(err)
    n, _st = check_valid(log, state, before=committed)
    committed = log.read_bytes()
    full.free()
    code, err = run_cli([*argv, "--rounds", "10"])
    assert code == 0, err
    m, st = check_valid(log, state, before=committed)
    assert m == n + 10 and st["log_size"] == log.stat().st_size
    assert {k: st[k] for k in ("last_round", "counts", "cursor")} == \
        recount(parse_lines(log.read_bytes()))


# Each commit is one log write then one state write. The next round is played while a
# commit runs (in the runner's commit thread), so even at concurrency 1 a commit may hold
# two rounds: the 4th commit holds round 4 or a later one, and its state write's lag
# behind the log is one commit (≥ 1 round).
@pytest.mark.parametrize(("spec", "path", "lag"), [
    ("enospc:write:7", "b.jsonl", 0),  # the 4th commit's append fails
    ("short:write:7", "b.jsonl", 0),  # ... after writing half of it (cut back)
    ("enospc:write:8", "b.state", 1),  # the 4th commit is logged, its state write fails
    ("short:write:8", "b.state", 1),  # ... after writing half of the temp file
], ids=["log", "log-partial", "state", "state-partial"])
def test_injected_enospc(tmp_path: Path, spawn_scripted: Any, spec: str, path: str,
                         lag: int) -> None:
    v1, _ = spawn_scripted()
    log, state = tmp_path / "b.jsonl", tmp_path / "b.state"
    prompts = write_prompts(tmp_path / "p.jsonl")
    wrapped = [sys.executable, str(write_wrapper(tmp_path)), spec]
    code, err = run_cli(run_argv(wrapped, v1, v1, log, prompts, "--aa-every", "0"))
    line = one_error_line(err)
    assert code == 2 and "disk full" in line and str(tmp_path / path) in line, err
    n, st = check_valid(log, state)
    assert st["last_round"] >= 3  # three commits went through
    assert n - st["last_round"] == 0 if lag == 0 else n - st["last_round"] >= lag
    assert not (tmp_path / "b.state.tmp").exists()  # the failed temp file was removed
    committed = log.read_bytes()
    code, err = run_cli(run_argv(CLI, v1, v1, log, prompts, "--rounds", "3"))
    assert code == 0, err
    m, st = check_valid(log, state, before=committed)
    assert m == st["last_round"] == n + 3 and st["log_size"] == len(log.read_bytes())


def test_torn_tail_while_disk_full(tmp_path: Path, spawn_scripted: Any) -> None:
    """A torn line cannot be moved aside while fsync reports ENOSPC: refuse cleanly, touch
    nothing; once the disk has room, the restart moves it and goes on."""
    v1, _ = spawn_scripted()
    log, state = tmp_path / "b.jsonl", tmp_path / "b.state"
    prompts = write_prompts(tmp_path / "p.jsonl")
    assert run_cli(run_argv(CLI, v1, v1, log, prompts, "--rounds", "3"))[0] == 0
    torn = log.read_bytes().splitlines()[-1][:50]
    with open(log, "ab") as fh:
        fh.write(torn)
    before = log.read_bytes()
    wrapped = [sys.executable, str(write_wrapper(tmp_path)), "enospc:fsync:1"]
    code, err = run_cli(run_argv(wrapped, v1, v1, log, prompts, "--rounds", "3"))
    line = one_error_line(err)
    assert code == 2 and "disk full" in line and str(log) in line, err
    assert log.read_bytes() == before
    assert orjson.loads(state.read_bytes())["last_round"] == 3
    code, err = run_cli(run_argv(CLI, v1, v1, log, prompts, "--rounds", "3"))
    assert code == 0 and "torn last line" in err, err
    # each message is one line, even with a long tmp path (no wrapping at 80 columns)
    assert all(x.startswith(("warning: ", "3 rounds logged")) for x in err.splitlines()), err
    n, st = check_valid(log, state, before=before[: -len(torn)])
    assert n == st["last_round"] == 6
    assert (tmp_path / "b.jsonl.torn").read_bytes().endswith(torn + b"\n")
