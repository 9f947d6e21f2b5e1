"""Several logs at once: ``bench``/``gates`` over repeated ``--log`` or a glob, pooled
totals, ``--by shard``, ``[gates] scope``, and the one-line refusals."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tests.cli.conftest import invoke
from tests.fleet.logs import write_log

GATES = """
[gates.rounds]
target = 10
[gates.wall_time]
target = 0.001
[gates.exact_match]
target = 0.80
[gates.prefix_match]
enabled = false
[gates.p95_gap]
target = 1000
[gates.v2_unreachable]
target = 0.2
[gates.ppl]
enabled = false
"""


def fleet(root: Path) -> dict[str, list[dict]]:
    """Three shards; ``c`` diverges on half its rounds (the others on ~5 %)."""
    return {
        "a": write_log(root / "a" / "burnin.jsonl", 40, seed=1, diverge=0.05),
        "b": write_log(root / "b" / "burnin.jsonl", 60, seed=2, diverge=0.05,
                       unreachable=0.05, t0=1_780_000_001.0),
        "c": write_log(root / "c" / "burnin.jsonl", 20, seed=3, diverge=0.5,
                       t0=1_780_000_000.5),
    }


def bench_json(*args: str | Path) -> dict:
    result = invoke("bench", "--json", *args)
    assert result.exit_code == 0, result.output
    return orjson.loads(result.output)


def test_glob_pools_every_shard_and_by_shard_matches_each_log(tmp_path: Path) -> None:
    records = fleet(tmp_path / "fleet")
    pooled = bench_json("--log", str(tmp_path / "fleet" / "*" / "burnin.jsonl"),
                        "--by", "shard")
    every = [r for rs in records.values() for r in rs]
    assert pooled["rounds"] == len(every) == 120
    for bucket in ("exact", "prefix-only", "no-match", "v2-unreachable"):
        assert pooled["counts"][bucket] == sum(r["bucket"] == bucket for r in every)
    assert pooled["shards"] == ["a/burnin.jsonl", "b/burnin.jsonl", "c/burnin.jsonl"]
    parity = sum(r["bucket"] in ("exact", "prefix-only", "no-match") for r in every)
    exact = sum(r["bucket"] == "exact" for r in every)
    assert pooled["exact_match_rate"] == pytest.approx(exact / parity)
    for host in ("a", "b", "c"):
        alone = bench_json("--log", tmp_path / "fleet" / host / "burnin.jsonl")
        shard = pooled["by_shard"][f"{host}/burnin.jsonl"]
        assert shard["rounds"] == alone["rounds"] == len(records[host])
        assert shard["counts"] == alone["counts"]
        assert shard["latency_ms"] == alone["latency_ms"]


def test_repeated_log_equals_the_glob(tmp_path: Path) -> None:
    fleet(tmp_path)
    by_glob = bench_json("--log", str(tmp_path / "*" / "burnin.jsonl"))
    by_list = bench_json(*[a for h in "abc" for a in ("--log", tmp_path / h / "burnin.jsonl")])
    assert by_glob == by_list


def test_by_shard_table_names_each_shard(tmp_path: Path) -> None:
    fleet(tmp_path)
    result = invoke("bench", "--log", str(tmp_path / "*" / "burnin.jsonl"), "--by", "shard")
    assert result.exit_code == 0, result.output
    assert "by shard" in result.output
    for host in "abc":
        assert f"{host}/burnin.jsonl" in result.output


def test_gates_scope_shard_fails_naming_the_bad_shard(tmp_path: Path) -> None:
    fleet(tmp_path / "fleet")
    config = tmp_path / "gates.toml"
    config.write_text(GATES)
    logs = str(tmp_path / "fleet" / "*" / "burnin.jsonl")
    pooled = invoke("gates", "--config", config, "--log", logs, "--json")
    assert pooled.exit_code == 0, pooled.output  # pooled: c's divergences are diluted
    per = invoke("gates", "--config", config, "--log", logs, "--json", "--scope", "shard")
    assert per.exit_code == 1, per.output
    report = orjson.loads(per.output)
    failed = [g["gate"] for g in report["gates"] if g["state"] == "fail"]
    assert failed == ["c/burnin.jsonl:exact_match"]
    assert {g["gate"].split(":")[0] for g in report["gates"]} == {
        "a/burnin.jsonl", "b/burnin.jsonl", "c/burnin.jsonl"}
    config.write_text('[gates]\nscope = "shard"\n' + GATES)  # the config says the same
    table = invoke("gates", "--config", config, "--log", logs)
    assert table.exit_code == 1
    assert "✗ c/burnin.jsonl:exact_match" in table.output


def test_bad_scope_in_config_is_one_line(tmp_path: Path) -> None:
    fleet(tmp_path)
    config = tmp_path / "gates.toml"
    config.write_text('[gates]\nscope = "fleet"\n')
    result = invoke("gates", "--config", config, "--log", str(tmp_path / "*" / "burnin.jsonl"))
    assert result.exit_code == 2
    assert "gates.scope" in result.output


@pytest.mark.parametrize("command", ["bench", "gates"])
def test_bad_shard_lists_are_one_line_exit_2(tmp_path: Path, command: str) -> None:
    fleet(tmp_path / "fleet")
    good = str(tmp_path / "fleet" / "a" / "burnin.jsonl")
    (tmp_path / "notes.txt").write_text("not a log\n")
    cases = {
        str(tmp_path / "fleet" / "zz" / "burnin.jsonl"): "no such log file",
        str(tmp_path / "nothing" / "*.jsonl"): "matches no file",
        str(tmp_path / "notes.txt"): "not a shadow-burnin log",
    }
    for spec, message in cases.items():
        result = invoke(command, "--log", good, "--log", spec)
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and message in lines[0] and Path(spec).name in lines[0]


def test_gates_write_refuses_any_shards_side_file(tmp_path: Path) -> None:
    fleet(tmp_path)
    logs = str(tmp_path / "*" / "burnin.jsonl")
    before = (tmp_path / "b" / "burnin.jsonl").read_bytes()
    for target in (tmp_path / "b" / "burnin.jsonl", tmp_path / "b" / "burnin.state",
                   tmp_path / "c" / "burnin.jsonl.00001"):
        result = invoke("gates", "--log", logs, "--write", target)
        assert result.exit_code == 2, result.output
        assert "refusing" in result.output
    assert (tmp_path / "b" / "burnin.jsonl").read_bytes() == before
    out = tmp_path / "CUTOVER.md"
    result = invoke("gates", "--log", logs, "--write", out)
    assert result.exit_code in (0, 1, 3) and out.exists()


def test_divergences_over_shards_name_each_rows_shard(tmp_path: Path) -> None:
    records = fleet(tmp_path)
    logs = str(tmp_path / "*" / "burnin.jsonl")
    result = invoke("divergences", "--log", logs, "--json")
    assert result.exit_code == 0, result.output
    rows = [orjson.loads(x) for x in result.output.splitlines()]
    want = sorted((f"{h}/burnin.jsonl", r["round"]) for h, rs in records.items() for r in rs
                  if r["bucket"] in ("prefix-only", "no-match"))
    assert sorted((r["shard"], r["round"]) for r in rows) == want
    assert [r["ts"] for r in rows] == sorted(r["ts"] for r in rows)
    last = invoke("divergences", "--log", logs, "--json", "--limit", "3")
    assert [orjson.loads(x) for x in last.output.splitlines()] == rows[-3:]
    table = invoke("divergences", "--log", logs)
    assert "shard" in table.output and "c/burnin.jsonl" in table.output
    one = invoke("divergences", "--log", tmp_path / "a" / "burnin.jsonl", "--json")
    assert all("shard" not in orjson.loads(x) for x in one.output.splitlines())


def test_a_halt_in_one_shard_is_a_fleet_halt_and_only_its_ack_clears_it(
        tmp_path: Path) -> None:
    from shadow_burnin.core.halt import ACK_EVENT, HALT_EVENT
    from shadow_burnin.io.log.events import append_event

    fleet(tmp_path / "fleet")
    config = tmp_path / "gates.toml"
    config.write_text(GATES)
    logs = str(tmp_path / "fleet" / "*" / "burnin.jsonl")
    a, b = (tmp_path / "fleet" / h / "burnin.jsonl" for h in "ab")

    def halt_state() -> str:
        result = invoke("gates", "--config", config, "--log", logs, "--json")
        report = orjson.loads(result.output)
        return next(g["state"] for g in report["gates"] if g["gate"] == "halt")

    assert halt_state() == "pass"
    append_event(b, {"event": HALT_EVENT, "ts": "2026-05-28T20:30:00.000Z", "round": 50})
    assert halt_state() == "fail"
    append_event(a, {"event": ACK_EVENT, "ts": "2026-05-28T20:31:00.000Z", "reason": "x"})
    assert halt_state() == "fail"  # a's ack does not forgive b's halt
    append_event(b, {"event": ACK_EVENT, "ts": "2026-05-28T20:32:00.000Z", "reason": "y"})
    assert halt_state() == "pass"
