"""Log rotation in the store: segments closed between batches, round numbers and state
across segments, every reader spanning them, resume, and every crash point of a
rotation (SIGKILL of a real ``run --rotate`` before/after each step) losing nothing."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson
import pytest

from shadow_burnin.errors import ConfigError
from shadow_burnin.io.log.logset import closed_segments, scan_segments, segment_path, segments
from shadow_burnin.io.log.rotation import Rotation, close_segment, parse_rotate
from shadow_burnin.io.log.sidecars import index_path
from shadow_burnin.io.log.store import Store
from tests.cli.conftest import invoke, write_prompts
from tests.fleet.logs import round_record
from tests.io.log.test_crash import check_rounds, parse_lines, recount


def rounds(first: int, n: int, t0: float = 1_780_000_000.0, step: float = 1.0) -> list[dict]:
    import random

    rng = random.Random(first)
    out = []
    for k in range(first, first + n):
        r = round_record(k, t0 + k * step, rng, diverge=0.2)
        r["cursor"] = k - 1
        out.append(r)
    return out


def all_lines(log: Path) -> bytes:
    return b"".join(p.read_bytes() for p in segments(log))


@pytest.mark.parametrize(("text", "want"), [
    ("1GB", Rotation(max_bytes=10**9)), ("500MB", Rotation(max_bytes=500 * 10**6)),
    ("2GiB", Rotation(max_bytes=2 * 1024**3)), ("8kb", Rotation(max_bytes=8000)),
    (" daily ", Rotation(daily=True))])
def test_parse_rotate(text: str, want: Rotation) -> None:
    assert parse_rotate(text) == want


@pytest.mark.parametrize("text", ["", "weekly", "1XB", "-5MB", "100", "1.5"])
def test_parse_rotate_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="--rotate"):
        parse_rotate(text)


def test_size_rotation_between_batches_numbers_continue(tmp_path: Path) -> None:
    log, state = tmp_path / "burnin.jsonl", tmp_path / "burnin.state"
    rule = Rotation(max_bytes=4096)
    batches = [rounds(1, 3), rounds(4, 7), rounds(11, 1), rounds(12, 9), rounds(21, 4)]
    with Store(log, state, rule) as store:
        for batch in batches:
            store.append_many(batch)
    closed = closed_segments(log)
    assert len(closed) >= 2
    for seg in closed:  # a segment is whole batches, over the limit only by its last one
        assert seg.read_bytes().endswith(b"\n")
    lines = [orjson.loads(x) for x in all_lines(log).splitlines()]
    assert [r["round"] for r in lines] == list(range(1, 25))  # wc -l over segments = rounds
    starts = {r["round"] for p in segments(log) for r in
              [orjson.loads(p.read_bytes().splitlines()[0])] if p.stat().st_size}
    batch_starts = {b[0]["round"] for b in batches}
    assert starts <= batch_starts  # never a batch split across segments
    st = orjson.loads(state.read_bytes())
    assert st["last_round"] == 24 and st["segments"] == len(closed)
    assert st["log_size"] == log.stat().st_size
    assert st["counts"] == recount(lines)["counts"]
    with Store(log, state, rule) as again:  # resume: no warning, same state
        assert again.state.last_round == 24
        again.append_many(rounds(25, 2))
    assert [r["round"] for r in parse_lines(all_lines(log))] == list(range(1, 27))


def test_daily_rotation_by_round_timestamps(tmp_path: Path) -> None:
    log, state = tmp_path / "burnin.jsonl", tmp_path / "burnin.state"
    day = 86_400.0
    t0 = 1_780_012_800.0  # 2026-05-29T00:00:00Z
    with Store(log, state, Rotation(daily=True)) as store:
        store.append_many(rounds(1, 3, t0 + 100, 10))
        store.append_many(rounds(4, 2, t0 + day - 50, 10))  # starts the same day
        store.append_many(rounds(6, 2, t0 + day + 5, 10))
    with Store(log, state, Rotation(daily=True)) as store:  # the day is read back on open
        store.append_many(rounds(8, 1, t0 + day + 500, 10))
        store.append_many(rounds(9, 1, t0 + 3 * day, 10))
    closed = closed_segments(log)
    firsts = [[r["round"] for r in parse_lines(p.read_bytes())] for p in segments(log)]
    assert firsts == [[1, 2, 3, 4, 5], [6, 7, 8], [9]]
    assert len(closed) == 2


def test_readers_span_segments_and_the_index_moves_along(tmp_path: Path) -> None:
    log, state = tmp_path / "burnin.jsonl", tmp_path / "burnin.state"
    whole = tmp_path / "whole" / "burnin.jsonl"
    whole.parent.mkdir()
    with Store(log, state, Rotation(max_bytes=4096)) as store, \
            Store(whole, tmp_path / "whole" / "burnin.state") as plain:
        for first in range(1, 40, 6):
            batch = rounds(first, 6)
            store.append_many(batch)
            plain.append_many(batch)
            invoke("bench", "--log", log)  # readers build each live index as it grows
    assert len(closed_segments(log)) >= 3
    assert all(index_path(p).exists() for p in closed_segments(log))
    ours = orjson.loads(invoke("bench", "--json", "--log", log).output)
    ref = orjson.loads(invoke("bench", "--json", "--log", whole).output)
    assert ours["rounds"] == ref["rounds"] == 42
    for key in ("counts", "latency_ms", "exact_match_rate", "forensics"):
        assert ours[key] == ref[key]
    shown = invoke("show", "--log", log, "3")
    assert shown.exit_code == 0 and "round 3" in shown.output.lower()
    listed = invoke("divergences", "--log", log, "--json")
    want = invoke("divergences", "--log", whole, "--json")
    assert listed.exit_code == 0 and listed.output == want.output
    recent = invoke("recent", "--log", log, "-n", "40")
    assert recent.exit_code == 0 and recent.output == invoke(
        "recent", "--log", whole, "-n", "40").output


@pytest.mark.parametrize("stop", ["linked", "index-moved", "replaced", "state-old"])
def test_rotation_cut_short_at_each_step(tmp_path: Path, stop: str) -> None:
    """The files as a kill would leave them between two steps of a rotation; the next
    open (what ``run`` does) finishes it, readers never count a round twice."""
    log, state = tmp_path / "burnin.jsonl", tmp_path / "burnin.state"
    with Store(log, state) as store:
        store.append_many(rounds(1, 5))
        store.append_many(rounds(6, 5))
    invoke("bench", "--log", log)  # an index beside the live log
    before = log.read_bytes()
    saved_state = state.read_bytes()
    seg = segment_path(log, 1)
    os.link(log, seg)
    if stop != "linked":
        os.replace(index_path(log), index_path(seg))
    if stop in ("replaced", "state-old"):
        close_segment(log, 1)
    assert all_lines(log) == before  # readers: the same rounds, once
    assert len(scan_segments(log).columns) == 10
    with Store(log, state, Rotation(max_bytes=4096)) as store:
        assert store.state.last_round == 10
        assert state.read_bytes() == saved_state or stop != "state-old"
        store.append_many(rounds(11, 2))
    assert seg.read_bytes() == before
    assert [r["round"] for r in parse_lines(all_lines(log))] == list(range(1, 13))
    st = orjson.loads(state.read_bytes())
    assert st["segments"] == 1 and st["log_size"] == log.stat().st_size


def test_state_missing_after_rotation_is_rebuilt_across_segments(tmp_path: Path) -> None:
    log, state = tmp_path / "burnin.jsonl", tmp_path / "burnin.state"
    with Store(log, state, Rotation(max_bytes=4096)) as store:
        for first in range(1, 30, 5):
            store.append_many(rounds(first, 5))
    want = orjson.loads(state.read_bytes())
    state.unlink()
    with Store(log, state) as store:
        got = store.state.to_json()
    assert {k: got[k] for k in ("last_round", "counts", "cursor", "segments", "log_size")} \
        == {k: want[k] for k in ("last_round", "counts", "cursor", "segments", "log_size")}


def test_run_rotate_flag_and_config_are_checked(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[run]\nrotate = "often"\n')
    result = invoke("run", "--config", config, "--v1", "http://127.0.0.1:9",
                    "--v2", "http://127.0.0.1:9", "--log", tmp_path / "x.jsonl")
    assert result.exit_code == 2 and "run.rotate" in result.output
    result = invoke("run", "--rotate", "12", "--v1", "http://127.0.0.1:9",
                    "--v2", "http://127.0.0.1:9", "--log", tmp_path / "x.jsonl")
    assert result.exit_code == 2 and "rotate" in result.output
    assert not (tmp_path / "x.jsonl").exists()


# -- SIGKILL during real runs ---------------------------------------------------------

WRAPPER = '''\
import os, signal, sys
spec, args = sys.argv[1], sys.argv[2:]
if spec != "none":
    when, name, nth = spec.split(":")
    nth, real, calls = int(nth), getattr(os, name), [0]

    def trap(*a, **kw):
        calls[0] += 1
        if when == "before" and calls[0] == nth:
            os.kill(os.getpid(), signal.SIGKILL)
        out = real(*a, **kw)
        if when == "after" and calls[0] == nth:
            os.kill(os.getpid(), signal.SIGKILL)
        return out

    setattr(os, name, trap)
sys.argv = ["shadow-burnin", *args]
from shadow_burnin.cli import main
main()
'''


class RotatingRun:
    def __init__(self, work: Path, v1: str, v2: str) -> None:
        self.work = work
        self.log, self.state = work / "crash.jsonl", work / "crash.state"
        self.prompts = write_prompts(work / "prompts.jsonl")
        self.wrapper = work / "wrapper.py"
        self.wrapper.write_text(WRAPPER)
        self.v1, self.v2 = v1, v2
        self.committed = b""
        self.rounds = 0

    def run(self, spec: str, rounds: int) -> int:
        argv = [sys.executable, str(self.wrapper), spec, "run", "--v1", self.v1, "--v2",
                self.v2, "--interval", "0", "--concurrency", "2", "--log", str(self.log),
                "--prompts", str(self.prompts), "--quiet", "--rotate", "4096",
                "--rounds", str(rounds)]
        with tempfile.TemporaryFile() as err:
            proc = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=err, timeout=300,
                                  stdin=subprocess.DEVNULL)
            err.seek(0)
            self.err = err.read().decode(errors="replace")[-1500:]
        return proc.returncode

    def check(self) -> None:
        data = all_lines(self.log)
        end = data.rfind(b"\n") + 1
        complete = data[:end]
        assert complete.startswith(self.committed), "a committed round was lost or rewritten"
        for p in closed_segments(self.log):
            body = p.read_bytes()
            assert body and body.endswith(b"\n"), f"{p.name}: a segment is whole lines"
        records = parse_lines(complete)
        n = check_rounds(records)
        # a restart, on a copy of every file: the state equals a recount of all segments
        copy = self.work / "restart"
        shutil.rmtree(copy, ignore_errors=True)
        copy.mkdir()
        for p in self.work.iterdir():
            if p.is_file() and p.name.startswith("crash."):
                shutil.copyfile(p, copy / p.name)
        closed = closed_segments(self.log)
        if closed and os.path.samefile(self.log, closed[-1]):
            # the copy lost the hard link: make the copy's live log the same file again
            os.unlink(copy / self.log.name)
            os.link(copy / closed[-1].name, copy / self.log.name)
        with Store(copy / self.log.name, copy / self.state.name) as store:
            st = store.state.to_json()
        want = recount(records)
        assert {k: st[k] for k in want} == want
        assert len(scan_segments(copy / self.log.name).columns) == n  # bench's reader
        self.committed = complete
        self.rounds = n


@pytest.mark.parametrize("spec", [
    "before:link:1", "after:link:1", "after:link:2",
    "before:replace:4", "after:replace:5", "after:replace:9", "before:replace:13",
    "after:fsync:6", "before:fsync:11", "after:fsync:17"])
def test_kill_during_rotation_loses_nothing(tmp_path: Path, spawn_scripted: Any,
                                            spec: str) -> None:
    v1, _ = spawn_scripted()
    v2, _ = spawn_scripted(diverge_after=5)
    run = RotatingRun(tmp_path, v1, v2)
    assert run.run("none", 12) == 0, run.err
    run.check()
    assert closed_segments(run.log), "no rotation in the first run"
    code = run.run(spec, 40)
    assert code in (0, -signal.SIGKILL), run.err
    if spec == "after:link:1":  # killed mid-rotation: the live log is still the segment
        assert os.path.samefile(run.log, closed_segments(run.log)[-1])
    run.check()
    if spec.endswith(":link:1"):  # the second run rotated (or died trying)
        assert code == -signal.SIGKILL
    before = run.rounds
    assert run.run("none", 6) == 0, run.err  # resumes: numbers continue, nothing twice
    run.check()
    assert run.rounds == before + 6
    st = orjson.loads(run.state.read_bytes())
    assert st["last_round"] == run.rounds and st["segments"] == len(closed_segments(run.log))
    wc = sum(p.read_bytes().count(b"\n") for p in segments(run.log))
    assert wc == run.rounds


def test_config_rotate_is_validated() -> None:
    from shadow_burnin import config as config_mod

    with pytest.raises((ConfigError, ValueError), match="rotate"):
        config_mod.load(None, {"run": {"rotate": "sometimes"}})


def test_dashboard_status_and_report_read_every_segment(tmp_path: Path) -> None:
    from shadow_burnin.app.dashboard import Dashboard
    from shadow_burnin.cli.options import load_config

    log, state = tmp_path / "burnin.jsonl", tmp_path / "burnin.state"
    whole = tmp_path / "whole" / "burnin.jsonl"
    whole.parent.mkdir()
    view = Dashboard(load_config(None, None, log, state))
    ref = Dashboard(load_config(None, None, whole, None))
    with Store(log, state, Rotation(max_bytes=4096)) as store, \
            Store(whole, tmp_path / "whole" / "burnin.state") as plain:
        for first in range(1, 40, 6):
            batch = rounds(first, 6)
            store.append_many(batch)
            plain.append_many(batch)
            assert view.overview()["rounds"] == first + 5  # live, across rotations
    assert len(closed_segments(log)) >= 3
    ours, want = view.overview(), ref.overview()
    assert ours["rounds"] == want["rounds"] == 42
    assert ours["counts"] == want["counts"]
    for n in (1, 7, 20, 42):
        assert view.round(n) == ref.round(n) and view.round(n)["round"] == n
    assert view.round(43) is None
    status = invoke("status", "--log", log, "--json")
    assert orjson.loads(status.output)["rounds"] == 42
    out = tmp_path / "report.html"
    result = invoke("report", "--log", log, "--html", out)
    assert result.exit_code == 0, result.output


def test_mirror_rotate_flag_is_checked(tmp_path: Path) -> None:
    result = invoke("mirror", "--rotate", "hourly", "--v1", "http://127.0.0.1:9",
                    "--v2", "http://127.0.0.1:9", "--log", tmp_path / "m.jsonl")
    assert result.exit_code == 2 and "run.rotate" in result.output
    assert not (tmp_path / "m.jsonl").exists()


def test_state_named_like_a_segment_is_refused(tmp_path: Path) -> None:
    log = tmp_path / "burnin.jsonl"
    result = invoke("run", "--v1", "http://127.0.0.1:9", "--v2", "http://127.0.0.1:9",
                    "--log", log, "--state", tmp_path / "burnin.jsonl.00002", "--rounds", "1")
    assert result.exit_code == 2 and "side file" in result.output
    assert not log.exists() and not (tmp_path / "burnin.jsonl.00002").exists()


@pytest.mark.parametrize("batch", [1, 1024], ids=["each-commit", "batched"])
def test_the_store_keeps_appending_each_segments_index_across_rotations(
        tmp_path: Path, batch: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner's index writer follows the rotation: each closed segment's index and
    the live one cover their file by the store's appends (none left to readers), with a
    segment at every commit or in batches (flushed before each rotation and on close)."""
    import numpy as np

    from shadow_burnin.io.log import index as index_mod

    monkeypatch.setattr(index_mod, "BATCH_ROUNDS", batch)

    from shadow_burnin.io.log.index import decode
    from shadow_burnin.io.log.rotation import parse_rotate
    from shadow_burnin.io.log.sidecars import index_path
    from tests.io.log.test_index import record

    log = tmp_path / "a.jsonl"
    rng = np.random.default_rng(3)
    records: list[dict[str, Any]] = []
    while len(records) < 60:
        r = record(rng, len(records) + 1, events=False)
        if r.get("kind") is None:
            records.append(r)
    with Store(log, tmp_path / "a.state", parse_rotate("8KB", "rotate")) as store:
        for i in range(0, 60, 5):
            store.append_many(records[i:i + 5])
        assert store._index is not None and store._index.failed is None
    files = [*sorted(p for p in tmp_path.glob("a.jsonl.0*") if p.suffix != ".idx"), log]
    assert len(files) > 2
    appended = 0
    for f in files:
        idx = decode(index_path(f).read_bytes())
        assert idx.covered == f.stat().st_size
        assert list(idx.rounds) == [orjson.loads(x)["round"]
                                    for x in f.read_bytes().splitlines()]
        appended += idx.segments > 1
    assert appended or batch > 1  # later commits of a segment were appended, not rebuilt
