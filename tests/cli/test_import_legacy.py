"""``import-legacy`` and ``bench`` on the earlier bash tool's log."""

from __future__ import annotations

import hashlib
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result

from shadow_burnin.cli import cli
from shadow_burnin.core.records import BUCKETS
from shadow_burnin.io.log import legacy
from shadow_burnin.io.log.store import Store

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "legacy"
NEW_BUCKETS = {"exact": 2, "prefix-only": 1, "no-match": 3, "v1-unreachable": 1,
               "v2-unreachable": 1, "both-unreachable": 1, "not-comparable": 0,
               "client-cancelled": 0}


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def work(tmp_path: Path) -> Path:
    for name in ("legacy.jsonl", "legacy.state", "malformed.jsonl", "malformed.state"):
        shutil.copy(FIXTURES / name, tmp_path / name)
    return tmp_path


def ours(work: Path) -> tuple[Path, Path]:
    return work / "ours.jsonl", work / "ours.state"


def do_import(work: Path, *extra: str | Path) -> Result:
    log, state = ours(work)
    return invoke("import-legacy", work / "legacy.jsonl", "--log", log, "--state", state, *extra)


def rounds_of(log: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in log.read_bytes().splitlines()]


def bench(log: Path, *extra: str) -> dict[str, Any]:
    result = invoke("bench", "--json", "--log", log, *extra)
    assert result.exit_code == 0, result.output
    return orjson.loads(result.stdout)


def digests(*paths: Path) -> dict[str, str | None]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else None
            for p in paths}


def test_bench_reads_a_raw_legacy_log(work: Path) -> None:
    got = bench(work / "legacy.jsonl")
    assert got["rounds"] == 9 and got["counts"] == NEW_BUCKETS
    assert got["notes"] == [legacy.NOTE]
    assert list(got["by_category"]) == ["legacy"]


def test_import_then_bench_agrees_with_a_recount(work: Path) -> None:
    result = do_import(work)
    assert result.exit_code == 0, result.output
    log, state = ours(work)
    records = rounds_of(log)
    assert [r["round"] for r in records] == list(range(1, 10))
    assert all(r["source"] == "legacy" and r["legacy"]["first_line_only"] for r in records)
    recount = Counter(r["bucket"] for r in records)
    got = bench(log)
    assert got["counts"] == {b: recount[b] for b in BUCKETS} == NEW_BUCKETS
    assert got["notes"] == ["9 round(s) imported from the earlier bash tool: their texts "
                            "hold only the first line of each reply"]
    saved = orjson.loads(state.read_bytes())
    assert saved["last_round"] == 9 and saved["counts"] == NEW_BUCKETS
    assert saved["setup"] is None and saved["seed"] is None and saved["cursor"] == 0
    assert saved["log_size"] == log.stat().st_size
    text = result.stdout
    assert "imported 9 rounds" in text and "(rounds 1–9)" in text
    assert "re-bucketed: 2 of 9 pairs (prefix-only → no-match 2)" in text
    assert "only the first line of each reply" in text


def test_report_with_the_legacy_state(work: Path) -> None:
    result = do_import(work, "--legacy-state", work / "legacy.state", "--json")
    assert result.exit_code == 0, result.output
    out = orjson.loads(result.stdout)
    assert out["imported"] == 9 and (out["first_round"], out["last_round"]) == (1, 9)
    assert out["tally"]["old_buckets"]["prefix-only"] == 3
    assert out["tally"]["buckets"] == NEW_BUCKETS and out["tally"]["rebucketed"] == 2
    rows = {r["key"]: (r["state"], r["log"]) for r in out["state_comparison"]["rows"]}
    assert rows["rounds"] == (12, 9) and rows["exact_matches"] == (4, 2)
    assert "3 rounds are not in the log" in out["state_comparison"]["notes"][0]
    text = do_import(work, "--legacy-state", work / "legacy.state", "--append").stdout
    assert "legacy state" in text and "3 rounds are not in the log" in text


def test_since_filter_covers_imported_rounds(work: Path) -> None:
    assert do_import(work).exit_code == 0
    log, _ = ours(work)
    got = bench(log, "--since", "2026-04-21T10:00:10Z")
    assert got["rounds"] == 5
    assert got["counts"] == {"exact": 1, "prefix-only": 0, "no-match": 1, "v1-unreachable": 1,
                             "v2-unreachable": 1, "both-unreachable": 1, "not-comparable": 0,
               "client-cancelled": 0}
    got = bench(log, "--since", "2026-04-21T10:00:03Z", "--until", "2026-04-21T10:00:09.250Z")
    assert got["rounds"] == 2 and got["counts"]["prefix-only"] == 1
    assert bench(log, "--since", "2026-04-21T10:00:25Z")["rounds"] == 0


def test_refuses_a_log_with_rounds_and_changes_nothing(work: Path) -> None:
    assert do_import(work).exit_code == 0
    log, state = ours(work)
    before = digests(log, state)
    result = do_import(work)
    assert result.exit_code == 2
    assert f"{log}: already holds rounds (up to round 9)" in result.stderr
    assert "--append" in result.stderr
    assert digests(log, state) == before


def test_append_continues_numbering(work: Path) -> None:
    log, state = ours(work)
    first = orjson.loads((work / "legacy.jsonl").read_bytes().splitlines()[0])
    own = {k: v for k, v in legacy.convert_line(first, 1).items()
           if k not in ("source", "legacy")}
    with Store(log, state) as store:  # one round of our own first
        store.append({**own, "setup": "abc", "seed": 7, "cursor": 0})
    assert do_import(work, "--append").exit_code == 0
    assert do_import(work, "--append").exit_code == 0
    assert [r["round"] for r in rounds_of(log)] == list(range(1, 20))
    saved = orjson.loads(state.read_bytes())
    assert saved["last_round"] == 19 and saved["setup"] == "abc"
    assert saved["seed"] == 7 and saved["cursor"] == 1  # legacy rounds leave them alone
    assert bench(log)["rounds"] == 19


def test_malformed_legacy_line(work: Path) -> None:
    log, state = ours(work)
    result = invoke("import-legacy", work / "malformed.jsonl", "--log", log, "--state", state)
    assert result.exit_code == 2
    assert f"{work / 'malformed.jsonl'}:4: legacy line is not JSON" in result.stderr
    assert not log.exists() and not state.exists()
    result = invoke("bench", "--log", work / "malformed.jsonl")
    assert result.exit_code == 2 and f"{work / 'malformed.jsonl'}:4:" in result.stderr


def test_malformed_legacy_state(work: Path) -> None:
    result = do_import(work, "--legacy-state", work / "malformed.state")
    assert result.exit_code == 2
    assert f"{work / 'malformed.state'}:3: exact_matches is not" in result.stderr
    assert not ours(work)[0].exists()


def test_legacy_state_given_as_our_state(work: Path) -> None:
    result = invoke("import-legacy", work / "legacy.jsonl", "--log", work / "ours.jsonl",
                    "--state", work / "legacy.state")
    assert result.exit_code == 2 and "pass it as --legacy-state" in result.stderr
    assert not (work / "ours.jsonl").exists()


@pytest.mark.parametrize("content", [b"", b'{"schema":1,"round":1}\n', b"not json\n"])
def test_not_a_legacy_log(work: Path, content: bytes) -> None:
    (work / "other.jsonl").write_bytes(content)
    result = invoke("import-legacy", work / "other.jsonl", "--log", work / "ours.jsonl")
    assert result.exit_code == 2 and "not a log of the earlier bash tool" in result.stderr
    missing = invoke("import-legacy", work / "missing.jsonl", "--log", work / "ours.jsonl")
    assert missing.exit_code == 2 and "no such legacy log file" in missing.stderr


def test_same_file_refused(work: Path) -> None:
    result = invoke("import-legacy", work / "legacy.jsonl", "--log", work / "legacy.jsonl")
    assert result.exit_code == 2 and "must differ" in result.stderr


def test_run_continues_after_an_import(work: Path, spawn_scripted: Callable[..., Any]) -> None:
    url, _proc = spawn_scripted(reply_mode="fixed", reply="hello")
    assert do_import(work).exit_code == 0
    log, state = ours(work)
    result = invoke("run", "--v1", url, "--v2", url, "--log", log, "--state", state,
                    "--rounds", "2", "--interval", "0", "--quiet")
    assert result.exit_code == 0, result.output
    records = [r for r in rounds_of(log) if r.get("kind", "round") == "round"]  # not A/A
    assert [r["round"] for r in records] == list(range(1, 12))
    assert [r.get("source") for r in records[9:]] == [None, None]
    assert [r["cursor"] for r in records[9:]] == [0, 1]
    assert all(r["bucket"] == "exact" for r in records[9:])
    assert orjson.loads(state.read_bytes())["last_round"] == 11
