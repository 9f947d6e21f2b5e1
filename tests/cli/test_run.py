"""`run` end to end through the CLI, against scripted servers in subprocesses."""

from __future__ import annotations

import signal
import time
import urllib.request
from pathlib import Path

import orjson

from tests.cli.conftest import digest_tree, invoke, read_log, write_prompts


def wait_for_lines(path: Path, n: int, tries: int = 400) -> None:
    """Poll (a bounded number of times) until the log has ``n`` lines."""
    for _ in range(tries):
        if path.exists() and len(path.read_bytes().splitlines()) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} did not reach {n} lines")


def server_state(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/_scripted/state", timeout=5) as resp:
        return orjson.loads(resp.read())


def wait_in_flight(url: str, count: int, tries: int = 400) -> None:
    """Poll until the scripted server has received ``count`` requests and one is being
    answered right now (a round is in flight)."""
    for _ in range(tries):
        state = server_state(url)
        if state["count"] >= count and state["active"] - 1 >= 1:  # - this state request
            return
        time.sleep(0.05)
    raise AssertionError(f"no request in flight at {url}")


def test_run_then_bench_agrees_with_recount(tmp_path: Path, spawn_scripted) -> None:
    v1, _ = spawn_scripted()
    v2, _ = spawn_scripted(diverge_after=4)
    log = tmp_path / "b.jsonl"
    prompts = write_prompts(tmp_path / "p.jsonl")
    res = invoke("run", "--v1", v1, "--v2", v2, "--prompts", prompts, "--rounds", 10,
                 "--interval", 0, "--log", log)
    assert res.exit_code == 0, res.output
    records = read_log(log)  # one line per round (round 10's A/A pair is inside it)
    assert [r["round"] for r in records] == list(range(1, 11))
    assert all("kind" not in r for r in records) and "aa" in records[9]
    assert (tmp_path / "b.state").exists()  # the state lives beside its log by default
    summary = orjson.loads(invoke("bench", "--log", log, "--json").stdout)
    assert summary["rounds"] == 10
    recount = {b: sum(r["bucket"] == b for r in records) for b in summary["counts"]}
    assert summary["counts"] == recount
    assert summary["counts"]["exact"] == 4 and summary["counts"]["prefix-only"] == 6
    assert summary["exact_match_rate"] == 0.4
    assert set(summary["latency_ms"]["v1"]) == {"p50", "p95", "p99"}
    human = invoke("bench", "--log", log)
    assert "exact match" in human.stdout and "40.00%" in human.stdout
    recent = invoke("recent", "-n", 3, "--log", log)
    assert recent.exit_code == 0 and "prefix-only" in recent.stdout
    shown = invoke("show", 7, "--log", log)
    assert "round 7" in shown.stdout and "⟦end⟧" in shown.stdout


def test_halo_bench_is_bench(tmp_path: Path, spawn_scripted) -> None:
    import subprocess
    import sys
    v1, _ = spawn_scripted()
    log = tmp_path / "h.jsonl"
    invoke("run", "--v1", v1, "--v2", v1, "--prompts", write_prompts(tmp_path / "p.jsonl"),
           "--rounds", 3, "--interval", 0, "--log", log)
    halo = Path(sys.executable).with_name("halo")
    ours = Path(sys.executable).with_name("shadow-burnin")
    args = ["bench", "--json", "--log", str(log), "--since", "2020-01-01T00:00:00Z"]
    a = subprocess.run([str(halo), *args], capture_output=True, check=True).stdout
    b = subprocess.run([str(ours), *args], capture_output=True, check=True).stdout
    assert a == b and orjson.loads(a)["rounds"] == 3


def test_since_until_are_times_not_strings(tmp_path: Path) -> None:
    log = tmp_path / "t.jsonl"
    side = {"text": "a", "latency_ms": 1.0, "ttft_ms": None, "status": 200,
            "finish_reason": "stop", "completion_tokens": 1, "error": None}
    rows = []
    for i, ts in enumerate(["2026-04-19T23:59:59.000Z", "2026-04-20T00:00:00.000Z",
                            "2026-04-20T12:00:00.500Z"], 1):
        rows.append(orjson.dumps({"schema": 1, "round": i, "ts": ts, "prompt_id": "p",
                                  "category": "c", "bucket": "exact", "divergence_byte": None,
                                  "prefix_match_chars": 1, "v1": side, "v2": side}))
    log.write_bytes(b"\n".join(rows) + b"\n")

    def count(*args: str) -> int:
        return orjson.loads(invoke("bench", "--log", log, "--json", *args).stdout)["rounds"]
    assert count("--since", "2026-04-20T00:00:00Z") == 2
    assert count("--since", "2026-04-20T02:00:00+02:00") == 2  # same instant, other zone
    assert count("--until", "2026-04-20T12:00:00Z") == 2
    assert count("--since", "2026-04-20T00:00:00.001Z", "--until", "2026-04-21") == 1
    bad = invoke("bench", "--log", log, "--since", "yesterday")
    assert bad.exit_code == 2 and "--since" in bad.stderr


def test_bench_empty_and_missing_log(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    res = invoke("bench", "--log", empty)
    assert res.exit_code == 0 and res.stdout.strip() == "no rounds"
    res = invoke("bench", "--log", tmp_path / "missing.jsonl")
    assert res.exit_code == 2
    assert "missing.jsonl" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_bench_on_a_lone_torn_line_and_on_a_foreign_text(tmp_path: Path) -> None:
    torn = tmp_path / "torn.jsonl"
    torn.write_bytes(b'{"schema":1,"round":1,"ts":"2026-11-27T23:00:0')  # a crash mid-write
    res = invoke("bench", "--log", torn)
    assert res.exit_code == 0 and res.stdout.strip() == "no rounds"
    assert "last line is incomplete" in res.stderr
    foreign = tmp_path / "notes.txt"
    foreign.write_bytes(b"hello world")  # no newline: it used to pass as "no rounds"
    res = invoke("bench", "--log", foreign)
    assert res.exit_code == 2 and "notes.txt: not a shadow-burnin log" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_second_run_is_locked_out(tmp_path: Path, spawn_scripted, run_proc) -> None:
    v1, _ = spawn_scripted()
    log = tmp_path / "l.jsonl"
    proc = run_proc("run", "--v1", v1, "--v2", v1, "--interval", 0.2, "--log", log)
    wait_for_lines(log, 1)
    res = invoke("run", "--v1", v1, "--v2", v1, "--rounds", 1, "--log", log)
    assert res.exit_code == 2 and "another shadow-burnin run" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    rounds = [r["round"] for r in read_log(log)]
    assert rounds == list(range(1, len(rounds) + 1))  # only the first run wrote


def test_sigint_finishes_the_round_in_flight(tmp_path: Path, spawn_scripted, run_proc) -> None:
    v1, _ = spawn_scripted(delay_ms=1500)
    log = tmp_path / "s.jsonl"
    proc = run_proc("run", "--v1", v1, "--v2", v1, "--interval", 0, "--log", log,
                    "--prompts", write_prompts(tmp_path / "p.jsonl"))
    wait_for_lines(log, 1)
    wait_in_flight(v1, 3)  # round 2 is in flight (its first request; each takes 1.5 s)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(15) == 0
    records = read_log(log)
    assert [r["round"] for r in records] == [1, 2]
    assert records[1]["bucket"] == "exact"  # finished, not cut


def test_second_signal_abandons_the_round(tmp_path: Path, spawn_scripted, run_proc) -> None:
    v1, _ = spawn_scripted(delay_ms=600_000)  # a round that cannot finish by itself
    log = tmp_path / "a.jsonl"
    proc = run_proc("run", "--v1", v1, "--v2", v1, "--interval", 0, "--log", log,
                    "--model", "m")  # no /v1/models request (it would wait too)
    wait_in_flight(v1, 1)  # round 1 has started (the test is void otherwise)
    # two different signals (two SIGINTs sent at once may merge into one)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert not log.exists() or log.read_bytes() == b""  # abandoned, not finished


def test_sigterm_ends_an_interval_0_run(tmp_path: Path, spawn_scripted, run_proc) -> None:
    """Defect 2's sibling: with interval 0 and no limit SIGTERM still ends the run, and
    every launched round is finished and logged without a gap."""
    v1, _ = spawn_scripted()
    log = tmp_path / "t.jsonl"
    proc = run_proc("run", "--v1", v1, "--v2", v1, "--interval", 0, "--concurrency", 8,
                    "--log", log, "--quiet", "--aa-every", 0, "--refire", 0)
    wait_for_lines(log, 20)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    rounds = [r["round"] for r in read_log(log)]
    assert rounds == list(range(1, len(rounds) + 1)) and len(rounds) >= 20
    assert f"{len(rounds)} rounds logged".encode() in err and b"SIGTERM" in err


def test_interval_0_duration_ends(tmp_path: Path, spawn_scripted) -> None:
    """Defect 2: `--interval 0 --duration 1s` used to run forever (the slot time stayed
    at t0). A logical check: the command returns, naming the duration as its reason."""
    v1, _ = spawn_scripted()
    log = tmp_path / "d.jsonl"
    for concurrency in (1, 8):
        res = invoke("run", "--v1", v1, "--v2", v1, "--interval", 0, "--duration", "1s",
                     "--concurrency", concurrency, "--log", log, "--quiet", "--force")
        assert res.exit_code == 0, res.output
        assert "(reached the duration)" in res.stderr
    rounds = [r["round"] for r in read_log(log)]
    assert rounds == list(range(1, len(rounds) + 1))


def test_sigusr1_prints_summary_and_keeps_going(tmp_path: Path, spawn_scripted,
                                               run_proc) -> None:
    v1, _ = spawn_scripted()
    log = tmp_path / "u.jsonl"
    proc = run_proc("run", "--v1", v1, "--v2", v1, "--interval", 0.1, "--log", log)
    wait_for_lines(log, 3)
    proc.send_signal(signal.SIGUSR1)
    n = len(log.read_bytes().splitlines())
    wait_for_lines(log, n + 3)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert b"exact match" in err


def test_setup_change_refused_then_new_run_archives(tmp_path: Path, spawn_scripted) -> None:
    v1, _ = spawn_scripted()
    log = tmp_path / "f.jsonl"
    base = ["run", "--v1", v1, "--v2", v1, "--rounds", 2, "--interval", 0, "--log", log]
    assert invoke(*base).exit_code == 0
    before = digest_tree(tmp_path)
    res = invoke(*base, "--max-tokens", 7)
    assert res.exit_code == 2 and "different setup" in res.stderr
    assert digest_tree(tmp_path) == before
    assert invoke(*base, "--max-tokens", 7, "--force").exit_code == 0
    assert [r["round"] for r in read_log(log)] == [1, 2, 3, 4]
    res = invoke(*base, "--new-run")
    assert res.exit_code == 0
    assert [r["round"] for r in read_log(log)] == [1, 2]
    archived = [p for p in tmp_path.iterdir() if p.name.startswith("f.jsonl.")
                and not p.name.endswith((".lock", ".torn"))
                and ".idx" not in p.name]  # the round index (a cache) is moved aside too
    assert len(archived) == 1 and len(read_log(archived[0])) == 4


def test_non_tty_progress_prints_plain_lines(tmp_path: Path, spawn_scripted) -> None:
    v1, _ = spawn_scripted()
    res = invoke("run", "--v1", v1, "--v2", v1, "--rounds", 100, "--interval", 0,
                 "--log", tmp_path / "p.jsonl")
    lines = [x for x in res.stdout.splitlines() if x.startswith("round ")]
    assert any(x.startswith("round 50:") for x in lines)
    assert any(x.startswith("round 100:") for x in lines)
    assert "\x1b[" not in res.stdout  # no terminal control codes off a TTY


def test_state_of_another_log_is_refused(tmp_path: Path, spawn_scripted) -> None:
    """Defect 11: `run --log b.jsonl --state a.state` used to warn and overwrite a.state."""
    v1, _ = spawn_scripted()
    prompts = write_prompts(tmp_path / "p.jsonl")
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    for log in (a, b):
        res = invoke("run", "--v1", v1, "--v2", v1, "--prompts", prompts, "--rounds", 2,
                     "--interval", 0, "--log", log, "--quiet")
        assert res.exit_code == 0, res.output
    before = digest_tree(tmp_path)
    res = invoke("run", "--v1", v1, "--v2", v1, "--prompts", prompts, "--rounds", 2,
                 "--interval", 0, "--log", b, "--state", tmp_path / "a.state", "--quiet")
    assert res.exit_code == 2 and "a.state: belongs to another log" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert digest_tree(tmp_path) == before  # nothing written, no lock left behind
    res = invoke("run", "--v1", v1, "--v2", v1, "--prompts", prompts, "--rounds", 1,
                 "--interval", 0, "--log", b, "--quiet")
    assert res.exit_code == 0  # its own state still works (the refusal held no lock)
