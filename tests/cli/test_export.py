"""``export --parquet``: one file per shard, the documented columns, the README's DuckDB
query giving bench's figures, guarded and atomic writes, one-line refusals."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import orjson
import pyarrow.parquet as pq
import pytest

from shadow_burnin.app.export import COLUMNS, TEXT_COLUMNS
from shadow_burnin.io.log.logset import segment_path
from tests.cli.conftest import invoke
from tests.fleet.logs import write_log

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_duckdb_query(files: str) -> str:
    """The DuckDB query of the README's "Fleets, exports and rotation" section."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Fleets, exports and rotation"):]
    block = re.search(r"```sql duckdb\n(.*?)```", section, re.S)
    assert block is not None, "the README has no DuckDB query block"
    return block.group(1).replace("'out/*.parquet'", f"'{files}'")


def rotated(log: Path, rounds: int, cuts: tuple[int, ...], **shape: object) -> list[dict]:
    """A log of ``rounds`` rounds split into closed segments at ``cuts`` (as --rotate)."""
    records = write_log(log, rounds, **shape)  # type: ignore[arg-type]
    lines = log.read_bytes().splitlines(keepends=True)
    start = 0
    for n, cut in enumerate(cuts, 1):
        segment_path(log, n).write_bytes(b"".join(lines[start:cut]))
        start = cut
    log.write_bytes(b"".join(lines[start:]))
    return records


def bench_json(*args: str | Path) -> dict:
    result = invoke("bench", "--json", *args)
    assert result.exit_code == 0, result.output
    return orjson.loads(result.output)


def test_readme_duckdb_query_gives_bench_figures(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet"
    write_log(fleet / "a" / "burnin.jsonl", 150, seed=5, diverge=0.2, unreachable=0.05)
    rotated(fleet / "b" / "burnin.jsonl", 220, (80, 150), seed=6, diverge=0.1,
            unreachable=0.03, t0=1_780_000_000.7, lat2=40.0)
    logs = str(fleet / "*" / "burnin.jsonl")
    out = tmp_path / "out"
    result = invoke("export", "--log", logs, "--parquet", out)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["a__burnin.parquet", "b__burnin.parquet"]
    bench = bench_json("--log", logs)
    with duckdb.connect() as con:
        [row] = con.execute(readme_duckdb_query(str(out / "*.parquet"))).fetchall()
    rounds, parity, exact_rate, v1_p95, v2_p95 = row
    assert rounds == bench["rounds"] == 370
    assert parity == bench["parity_rounds"]
    assert exact_rate == pytest.approx(bench["exact_match_rate"], rel=1e-12)
    assert v1_p95 == bench["latency_ms"]["v1"]["p95"]
    assert v2_p95 == bench["latency_ms"]["v2"]["p95"]


def test_columns_and_values_follow_the_log(tmp_path: Path) -> None:
    log = tmp_path / "burnin.jsonl"
    records = rotated(log, 60, (25,), seed=9, diverge=0.3, unreachable=0.1)
    out = tmp_path / "out"
    assert invoke("export", "--log", log, "--parquet", out).exit_code == 0
    table = pq.read_table(out / "burnin.parquet")
    assert table.schema.names == [c[0] for c in COLUMNS]
    assert table.schema.metadata[b"shadow-burnin"] == b"export"
    rows = table.to_pylist()
    assert [r["round"] for r in rows] == list(range(1, 61))  # both segments, in order
    for got, rec in zip(rows, records, strict=True):
        assert got["shard"] == "burnin.jsonl"
        assert got["bucket"] == rec["bucket"]
        assert got["divergence_byte"] == rec["divergence_byte"]
        assert got["prefix_match_chars"] == rec["prefix_match_chars"]
        assert got["prompt_id"] == rec["prompt_id"] and got["category"] == rec["category"]
        assert got["v1_latency_ms"] == rec["v1"]["latency_ms"]
        assert got["ts"].isoformat(timespec="milliseconds").replace("+00:00", "Z") == rec["ts"]
        if rec["bucket"] == "v2-unreachable":
            assert got["v2_latency_ms"] is None and got["v2_error_code"] == "http-503"
            assert got["v2_status"] is None
        else:
            assert got["v2_latency_ms"] == rec["v2"]["latency_ms"]
            assert got["v2_status"] == 200 and got["v2_error_code"] is None
        assert got["verdict"] == (rec.get("forensics") or {}).get("verdict")
        assert got["refire"] == (rec.get("refire") or {}).get("outcome")


def test_texts_only_with_the_flag(tmp_path: Path) -> None:
    log = tmp_path / "burnin.jsonl"
    records = write_log(log, 12, seed=2, diverge=0.5)
    out = tmp_path / "out"
    assert invoke("export", "--log", log, "--parquet", out, "--texts").exit_code == 0
    table = pq.read_table(out / "burnin.parquet")
    assert table.schema.names[-2:] == [c[0] for c in TEXT_COLUMNS]
    assert table.column("v2_text").to_pylist() == [r["v2"]["text"] for r in records]
    assert invoke("export", "--log", log, "--parquet", out).exit_code == 0  # replaces ours
    assert "v1_text" not in pq.read_schema(out / "burnin.parquet").names


def test_error_details_stay_out(tmp_path: Path) -> None:
    log = tmp_path / "burnin.jsonl"
    rec = write_log(log, 1, seed=1)[0]
    rec["round"], rec["bucket"] = 2, "v2-unreachable"
    rec["v2"] = dict(rec["v2"], text=None, error="http-401: bad key sk-SECRET-123")
    with open(log, "ab") as fh:
        fh.write(orjson.dumps(rec) + b"\n")
    out = tmp_path / "out"
    assert invoke("export", "--log", log, "--parquet", out, "--texts").exit_code == 0
    rows = pq.read_table(out / "burnin.parquet").to_pylist()
    assert rows[1]["v2_error_code"] == "http-401"
    assert "sk-SECRET" not in repr(rows)


def test_refuses_a_file_it_did_not_write_and_keeps_it(tmp_path: Path) -> None:
    log = tmp_path / "burnin.jsonl"
    write_log(log, 5)
    out = tmp_path / "out"
    out.mkdir()
    theirs = out / "burnin.parquet"
    theirs.write_bytes(b"PAR1 not ours")
    result = invoke("export", "--log", log, "--parquet", out)
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1 and "refusing" in result.output
    assert theirs.read_bytes() == b"PAR1 not ours"


def test_refuses_to_export_over_a_side_file(tmp_path: Path) -> None:
    log = tmp_path / "run"  # a log without .jsonl: its export name is a side file name
    write_log(log, 3)
    result = invoke("export", "--log", log, "--parquet", tmp_path)
    assert result.exit_code == 2 and "refusing" in result.output
    assert not (tmp_path / "run.parquet").exists()


def test_parquet_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    log = tmp_path / "burnin.jsonl"
    write_log(log, 3)
    target = tmp_path / "file"
    target.write_text("x")
    result = invoke("export", "--log", log, "--parquet", target)
    assert result.exit_code == 2
    assert target.read_text() == "x"


def test_bad_log_midway_leaves_the_old_export_whole(tmp_path: Path) -> None:
    log = tmp_path / "burnin.jsonl"
    write_log(log, 30)
    out = tmp_path / "out"
    assert invoke("export", "--log", log, "--parquet", out).exit_code == 0
    before = (out / "burnin.parquet").read_bytes()
    with open(log, "ab") as fh:
        fh.write(b"this line is not json\n")
    write_log(log, 3, first=31)
    result = invoke("export", "--log", log, "--parquet", out)
    assert result.exit_code == 2, result.output
    assert "burnin.jsonl:31" in result.output
    assert (out / "burnin.parquet").read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == ["burnin.parquet"]  # no temp file left


def test_missing_shard_is_one_line(tmp_path: Path) -> None:
    result = invoke("export", "--log", tmp_path / "nope.jsonl", "--parquet", tmp_path / "o")
    assert result.exit_code == 2 and "nope.jsonl" in result.output
    assert not (tmp_path / "o").exists()


def test_readme_schema_table_lists_every_column() -> None:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Fleets, exports and rotation"):]
    listed = re.findall(r"^\| `(\w+)` \| ([^|]+) \|", section, re.M)
    assert [(n, t.strip()) for n, t in listed] == [(n, t) for n, t, _ in COLUMNS + TEXT_COLUMNS]


def test_hostile_values_become_nulls_not_a_crash(tmp_path: Path) -> None:
    log = tmp_path / "burnin.jsonl"
    good = write_log(log, 3, seed=4)
    odd = dict(good[0], round=4, prefix_match_chars=3.5, divergence_byte=True,
               forensics={"verdict": 7, "swing": "big", "divergence_token": [1]},
               refire="again", aa=["x"], prompt={"no": 1}, source=5)
    odd["v1"] = dict(good[0]["v1"], latency_ms=True, status="200", error=404,
                     completion_tokens=2**63 + 5)
    with open(log, "ab") as fh:
        fh.write(orjson.dumps(odd) + b"\n")
    out = tmp_path / "out"
    result = invoke("export", "--log", log, "--parquet", out)
    assert result.exit_code == 0, result.output
    rows = pq.read_table(out / "burnin.parquet").to_pylist()
    assert [r["round"] for r in rows] == [1, 2, 3, 4]
    last = rows[-1]
    assert last["prefix_match_chars"] is None and last["divergence_byte"] is None
    assert last["verdict"] is None and last["swing"] is None and last["refire"] is None
    assert last["v1_latency_ms"] is None and last["v1_status"] is None
    assert last["v1_error_code"] is None and last["v1_completion_tokens"] is None
    assert last["source"] == "run" and last["aa_target"] is None
    assert rows[0]["v1_latency_ms"] == good[0]["v1"]["latency_ms"]  # the rest as usual


def test_prompt_texts_joined_by_id_and_a_missing_prompts_file_only_costs_them(
        tmp_path: Path) -> None:
    log = tmp_path / "burnin.jsonl"
    records = write_log(log, 4)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_bytes(b"".join(orjson.dumps({"id": r["prompt_id"], "category": "c",
                                               "prompt": f"text of {r['prompt_id']}"}) + b"\n"
                                 for r in records))
    config = tmp_path / "c.toml"
    config.write_text(f'[run]\nprompts = "{prompts}"\n')
    out = tmp_path / "out"
    assert invoke("export", "--config", config, "--log", log, "--parquet", out).exit_code == 0
    got = pq.read_table(out / "burnin.parquet").column("prompt").to_pylist()
    assert got == [f"text of {r['prompt_id']}" for r in records]
    prompts.unlink()
    result = invoke("export", "--config", config, "--log", log, "--parquet", out)
    assert result.exit_code == 0, result.output
    assert "prompt texts not joined" in result.output
    assert pq.read_table(out / "burnin.parquet").column("prompt").to_pylist() == [None] * 4
