"""Fleet, rotation and Parquet on the real pair (xllamacpp vs mistral.rs): two shards
written by real ``run --rotate`` burn-ins, read back as one fleet by ``bench``/``gates``,
exported to Parquet and queried by DuckDB with the README's query."""

from __future__ import annotations

from pathlib import Path

import duckdb
import orjson
import pytest

from shadow_burnin.app.demo import write_demo_prompts
from shadow_burnin.io.log.logset import closed_segments, segments
from tests.cli.conftest import invoke
from tests.cli.test_export import readme_duckdb_query

pytestmark = pytest.mark.e2e


def burnin(pair, log: Path, prompts: Path, rounds: int) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    config = log.with_name("run.toml")
    config.write_text("[request.extra]\ncache_prompt = false\nrepeat_penalty = 1.0\n")
    result = invoke("run", "--config", config, "--v1", pair.v1.url, "--v2", pair.v2.url,
                    "--api", "completions", "--max-tokens", "12", "--interval", "0",
                    "--timeout", "120", "--prompts", prompts, "--log", log, "--seed", "3",
                    "--logprobs", "0", "--refire", "0", "--aa-every", "0",
                    "--rotate", "4KiB", "--rounds", str(rounds), "--quiet")
    assert result.exit_code == 0, result.output


def test_real_fleet_rotated_exported_and_queried(real_pair, tmp_path: Path) -> None:
    prompts = write_demo_prompts(tmp_path / "prompts.jsonl")
    fleet = tmp_path / "fleet"
    for host, n in (("node-a", 8), ("node-b", 6)):
        burnin(real_pair, fleet / host / "burnin.jsonl", prompts, n)
    a = fleet / "node-a" / "burnin.jsonl"
    burnin(real_pair, a, prompts, 4)  # resumed: numbers continue across segments
    assert closed_segments(a), "4 KiB should have rotated node-a's log"
    lines = [orjson.loads(x) for p in segments(a) for x in p.read_bytes().splitlines()]
    assert [r["round"] for r in lines] == list(range(1, 13))

    logs = str(fleet / "*" / "burnin.jsonl")
    result = invoke("bench", "--json", "--log", logs, "--by", "shard")
    assert result.exit_code == 0, result.output
    bench = orjson.loads(result.output)
    assert bench["rounds"] == 18
    assert bench["shards"] == ["node-a/burnin.jsonl", "node-b/burnin.jsonl"]
    assert bench["by_shard"]["node-a/burnin.jsonl"]["rounds"] == 12
    assert bench["by_shard"]["node-b/burnin.jsonl"]["rounds"] == 6

    gates = invoke("gates", "--json", "--log", logs, "--scope", "shard")
    names = {g["gate"].split(":")[0] for g in orjson.loads(gates.output)["gates"]}
    assert names == {"node-a/burnin.jsonl", "node-b/burnin.jsonl"}

    out = tmp_path / "out"
    result = invoke("export", "--log", logs, "--parquet", out, "--texts")
    assert result.exit_code == 0, result.output
    with duckdb.connect() as con:
        [row] = con.execute(readme_duckdb_query(str(out / "*.parquet"))).fetchall()
        texts = con.execute(f"SELECT count(*) FROM read_parquet('{out}/*.parquet') "
                            "WHERE v1_text IS NOT NULL").fetchall()[0][0]
    rounds, parity, rate, v1_p95, v2_p95 = row
    assert rounds == 18 and parity == bench["parity_rounds"]
    assert rate == pytest.approx(bench["exact_match_rate"], rel=1e-12)
    assert (v1_p95, v2_p95) == (bench["latency_ms"]["v1"]["p95"],
                                bench["latency_ms"]["v2"]["p95"])
    assert texts == bench["counts"]["exact"] + bench["counts"]["prefix-only"] + \
        bench["counts"]["no-match"] + bench["counts"]["v2-unreachable"]
