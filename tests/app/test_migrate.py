"""``migrate``: an old-layout log (A/A lines, inline events) → one line per round."""

from __future__ import annotations

import hashlib
from pathlib import Path

import orjson
import pytest

from shadow_burnin.app.migrate import migrate
from shadow_burnin.core.halt import ack_event
from shadow_burnin.core.timefmt import iso_ms as iso
from shadow_burnin.errors import ConfigError, LogError
from shadow_burnin.io.log.logread import iter_rounds, log_events
from shadow_burnin.io.log.sidecars import events_path
from shadow_burnin.io.log.store import Store
from tests.cli.conftest import invoke

T0 = 1_800_000_000.0
SIDE = {"text": "x", "latency_ms": 10.0, "ttft_ms": None, "status": 200,
        "finish_reason": "stop", "completion_tokens": 1, "error": None}


def round_record(n: int, bucket: str = "exact") -> dict:
    return {"schema": 1, "round": n, "ts": iso(T0 + n), "prompt_id": f"p{n % 3}",
            "category": "c", "bucket": bucket, "divergence_byte": None,
            "prefix_match_chars": 1, "v1": SIDE, "v2": SIDE, "setup": "s", "seed": 1,
            "cursor": n - 1}


def aa_line(n: int, bucket: str) -> dict:
    return {"kind": "aa", "schema": 1, "round": n, "ts": iso(T0 + n + 0.5),
            "prompt_id": f"p{n % 3}", "category": "c", "target": "v1", "bucket": bucket,
            "divergence_byte": None, "prefix_match_chars": 1, "a": SIDE, "b": SIDE,
            "setup": "s"}


def old_log(path: Path) -> list[dict]:
    """40 rounds, an A/A line after every 10th, a halt and its ack inline: 44 lines."""
    halt = {"kind": "event", "event": "halt", "ts": iso(T0 + 30), "round": 30,
            "action": "flag"}
    lines: list[dict] = []
    for n in range(1, 41):
        lines.append(round_record(n, "no-match" if n % 4 == 0 else "exact"))
        if n % 10 == 0:
            lines.append(aa_line(n, "exact" if n != 20 else "no-match"))
        if n == 30:
            lines.append(halt)
        if n == 35:
            lines.append(ack_event(iso(T0 + 35.5), "seen", halt, "ops"))
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in lines))
    return lines


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_migrate_gives_one_line_per_round_and_the_same_figures(tmp_path: Path) -> None:
    old, new = tmp_path / "old.jsonl", tmp_path / "new.jsonl"
    lines = old_log(old)
    assert len(lines) == 46  # the old layout: wc -l is not the number of rounds
    before = digest(old)
    done = migrate(old, new)
    assert (done.rounds, done.aa_pairs, done.events, done.orphans) == (40, 4, 2, 0)
    assert digest(old) == before  # never rewritten in place
    records = [orjson.loads(x) for x in new.read_bytes().splitlines()]
    assert [r["round"] for r in records] == list(range(1, 41))  # wc -l == rounds
    assert all("kind" not in r for r in records)
    assert [r["round"] for r in records if "aa" in r] == [10, 20, 30, 40]
    assert records[19]["aa"]["bucket"] == "no-match" and records[19]["aa"]["a"] == SIDE
    assert [e["event"] for e in log_events(new)] == ["halt", "ack-halt"]
    # every reader sees the same log in both layouts
    assert [r for _n, _t, r in iter_rounds(old)] == \
        [{k: v for k, v in r.items() if k != "aa"} for r in records]
    a = orjson.loads(invoke("bench", "--json", "--log", old).stdout.replace("old.", "X."))
    b = orjson.loads(invoke("bench", "--json", "--log", new).stdout.replace("new.", "X."))
    assert a == b and a["rounds"] == 40 and a["aa"]["records"] == 4
    ga = orjson.loads(invoke("gates", "--json", "--log", old).stdout)
    gb = orjson.loads(invoke("gates", "--json", "--log", new).stdout)
    assert ga["halt"] == gb["halt"] and ga["halt"]["acks"] == 1
    # the state of the new log rebuilds from it and its events file
    with Store(new, tmp_path / "new.state") as store:
        assert store.state.last_round == 40 and store.state.extra["halt"]["active"] is False


def test_orphan_aa_line_is_kept_as_an_event(tmp_path: Path) -> None:
    old, new = tmp_path / "o.jsonl", tmp_path / "n.jsonl"
    rows = [round_record(1), round_record(2), aa_line(1, "exact")]  # not after round 1
    old.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    done = migrate(old, new)
    assert (done.rounds, done.aa_pairs, done.orphans) == (2, 0, 1)
    (event,) = [orjson.loads(x) for x in events_path(new).read_bytes().splitlines()]
    assert event["event"] == "aa-orphan" and event["record"]["round"] == 1


def test_migrate_refuses_targets_and_changes_nothing(tmp_path: Path) -> None:
    old = tmp_path / "old.jsonl"
    old_log(old)
    (tmp_path / "taken.jsonl").write_text("mine\n")
    snapshot = {p.name: digest(p) for p in tmp_path.iterdir()}
    for target in (old, tmp_path / "old.state", tmp_path / "old.jsonl.events.jsonl",
                   tmp_path / "taken.jsonl"):
        with pytest.raises(ConfigError):
            migrate(old, target)
        res = invoke("migrate", old, "--log", target)
        assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1
    with pytest.raises(LogError, match="no such log file"):
        migrate(tmp_path / "missing.jsonl", tmp_path / "x.jsonl")
    assert {p.name: digest(p) for p in tmp_path.iterdir()} == snapshot


def test_migrate_command(tmp_path: Path) -> None:
    old, new = tmp_path / "old.jsonl", tmp_path / "new.jsonl"
    old_log(old)
    res = invoke("migrate", old, "--log", new)
    assert res.exit_code == 0, res.output
    assert "migrated 40 rounds (4 A/A pairs inside their round, 2 events" in res.stdout
    assert len(new.read_bytes().splitlines()) == 40
    human = invoke("bench", "--log", new).stdout
    # 4 A/A pairs: bench says so instead of a verdict (defect 8)
    assert "too few A/A pairs to judge (4 < 30)" in human and "own noise" not in human
    again = invoke("migrate", old, "--log", new)
    assert again.exit_code == 2 and "exists" in again.stderr
