"""``status`` and ``report --html`` over several logs: pooled figures, one line (status)
or one table row (report) per shard, a halt in any shard shown, bad shard lists refused
in one line. (``serve`` over several logs: tests/web/test_fleet_browser.py.)"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from shadow_burnin.core.halt import HALT_EVENT
from shadow_burnin.io.log.events import append_event
from tests.cli.conftest import invoke
from tests.fleet.logs import write_log

HOSTILE_SHARD = "[red]x<b>i"  # a directory name: rich markup and HTML


def fleet(root: Path) -> dict[str, list[dict[str, Any]]]:
    """Three shards side by side; ``b`` has v2 unreachable rounds (http-503)."""
    return {
        "a": write_log(root / "a" / "burnin.jsonl", 30, seed=1, diverge=0.1),
        "b": write_log(root / "b" / "burnin.jsonl", 50, seed=2, diverge=0.1,
                       unreachable=0.1, t0=1_780_000_001.0),
        HOSTILE_SHARD: write_log(root / HOSTILE_SHARD / "burnin.jsonl", 20, seed=3,
                                 diverge=0.5, t0=1_780_000_000.5),
    }


def bench(log: Path) -> dict[str, Any]:
    result = invoke("bench", "--log", log, "--json")
    assert result.exit_code == 0, result.output
    return orjson.loads(result.output)


def status_json(*args: str | Path) -> tuple[int, dict[str, Any]]:
    result = invoke("status", "--json", *args)
    return result.exit_code, orjson.loads(result.output)


def test_status_over_shards_pools_and_lists_each_shard(tmp_path: Path) -> None:
    records = fleet(tmp_path)
    glob = str(tmp_path / "*" / "burnin.jsonl")
    code, st = status_json("--log", glob)
    assert st["rounds"] == sum(map(len, records.values())) == 100
    assert [s["shard"] for s in st["shards"]] == sorted(
        f"{h}/burnin.jsonl" for h in records)
    for s in st["shards"]:
        host = s["shard"].split("/")[0]
        _c, alone = status_json("--log", tmp_path / host / "burnin.jsonl")
        assert s["rounds"] == alone["rounds"] == len(records[host])
        assert s["last_round_ts"] == alone["last_round_ts"]
        assert [(a["kind"], a["since"]) for a in s["alerts"]] == \
            [(a["kind"], a["since"]) for a in alone["alerts"]]  # "seconds": now moves
    assert st["last_round_ts"] == max(s["last_round_ts"] for s in st["shards"])
    # the logs are old: every shard has its stall alert, named by its shard
    assert code == 1 and len(st["alerts"]) == sum(len(s["alerts"]) for s in st["shards"])
    assert {a["shard"] for a in st["alerts"]} == {s["shard"] for s in st["shards"]}
    assert all(a["text"].startswith(a["shard"] + ": ") for a in st["alerts"])
    assert not st["halt"]["active"]
    # a halt in one shard is the fleet's halt
    append_event(tmp_path / "b" / "burnin.jsonl",
                 {"event": HALT_EVENT, "ts": "2026-05-28T20:30:00.000Z", "round": 40})
    _c, halted = status_json("--log", glob)
    assert halted["halt"]["active"]
    assert [s["shard"] for s in halted["shards"] if s["halt"]["active"]] == ["b/burnin.jsonl"]
    # the terminal: pooled lines, then one line per shard, names shown as text
    text = invoke("status", "--log", glob)
    assert text.exit_code == 1
    assert "3 shards" in text.output and "ACTIVE" in text.output
    assert f"{HOSTILE_SHARD}/burnin.jsonl" in text.output  # not taken as markup
    for name in ("a/burnin.jsonl", "b/burnin.jsonl"):
        assert re.search(re.escape(name) + r".*\b(30|50)\b", text.output)


def test_status_of_one_log_is_unchanged(tmp_path: Path) -> None:
    fleet(tmp_path)
    _c, one = status_json("--log", tmp_path / "a" / "burnin.jsonl")
    assert "shards" not in one and one["log"] == str(tmp_path / "a" / "burnin.jsonl")


def test_report_over_shards_has_pooled_figures_and_a_shard_table(tmp_path: Path) -> None:
    records = fleet(tmp_path / "fleet")
    glob = str(tmp_path / "fleet" / "*" / "burnin.jsonl")
    append_event(tmp_path / "fleet" / "a" / "burnin.jsonl",
                 {"event": HALT_EVENT, "ts": "2026-05-28T20:30:00.000Z", "round": 20})
    target = tmp_path / "fleet-report.html"
    result = invoke("report", "--log", glob, "--html", target)
    assert result.exit_code == 0, result.output
    pooled = invoke("bench", "--log", glob, "--json")
    want = orjson.loads(pooled.output)
    assert f"{want['rounds']:,} rounds" in result.output
    html = target.read_text()
    assert f'data-figure="rounds">{want["rounds"]:,}<' in html
    rows = re.findall(r'<tr data-shard="([^"]*)">(.*?)</tr>', html)
    assert [name for name, _ in rows] == sorted(
        f"{h}/burnin.jsonl".replace("<", "&lt;").replace(">", "&gt;") for h in records)
    for name, row in rows:
        host = name.split("/")[0]
        host = HOSTILE_SHARD if host.startswith("[red]") else host
        alone = bench(tmp_path / "fleet" / host / "burnin.jsonl")
        assert f'<td class="num">{alone["rounds"]:,}</td>' in row
        assert ("ACTIVE" in row) == (host == "a")  # the halt: in its shard's row …
    assert "<b>" not in html.split("<main", 1)[1]  # the hostile name escaped
    assert 'data-figure="halt">ACTIVE<' in html  # … and in the pooled halt card
    # the divergence list (every round not exact) names each row's shard
    divergent = sum(r["bucket"] != "exact" for rs in records.values() for r in rs)
    assert f"Divergences ({divergent:,};" in html
    assert "<th>shard</th>" in html
    # written files are marked and guarded like one log's report: never a shard's file
    for bad in (tmp_path / "fleet" / "b" / "burnin.jsonl",
                tmp_path / "fleet" / "b" / "burnin.jsonl.idx"):
        before = bad.read_bytes() if bad.exists() else None
        refused = invoke("report", "--log", glob, "--html", bad)
        assert refused.exit_code == 2 and "refusing" in refused.output
        assert (bad.read_bytes() if bad.exists() else None) == before


def test_gates_write_with_report_over_shards_links_the_pooled_report(tmp_path: Path) -> None:
    records = fleet(tmp_path / "fleet")
    glob = str(tmp_path / "fleet" / "*" / "burnin.jsonl")
    doc, html = tmp_path / "CUTOVER.md", tmp_path / "fleet-report.html"
    result = invoke("gates", "--log", glob, "--write", doc, "--report", html)
    assert result.exit_code in (0, 1, 3), result.output
    text = html.read_text()
    assert text.count('<tr data-shard="') == len(records) == 3
    assert f'data-figure="rounds">{sum(map(len, records.values())):,}<' in text
    assert "fleet-report.html" in doc.read_text()


@pytest.mark.parametrize("command", ["status", "report", "serve"])
def test_bad_shard_lists_are_one_line_exit_2(tmp_path: Path, command: str) -> None:
    fleet(tmp_path / "fleet")
    good = str(tmp_path / "fleet" / "a" / "burnin.jsonl")
    (tmp_path / "notes.txt").write_text("not a log\n")
    extra = {"report": ["--html", str(tmp_path / "r.html")], "status": [],
             "serve": ["--port", "0"]}[command]
    cases = {
        str(tmp_path / "fleet" / "zz" / "burnin.jsonl"): "no such log file",
        str(tmp_path / "nothing" / "*.jsonl"): "matches no file",
        str(tmp_path / "notes.txt"): "not a shadow-burnin log",
    }
    for spec, message in cases.items():
        result = invoke(command, "--log", good, "--log", spec, *extra)
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and message in lines[0] and Path(spec).name in lines[0]
    assert not (tmp_path / "r.html").exists()
