"""``bench``'s per-side error-code breakdown of unreachable rounds: ``unreachable_errors``
in ``--json`` (added, no key changed) and a terminal table, codes shown as text."""

from __future__ import annotations

from pathlib import Path

import orjson

from tests.cli.conftest import invoke
from tests.fleet.logs import write_log


def test_unreachable_rounds_by_error_code_json_and_terminal(tmp_path: Path) -> None:
    log = tmp_path / "burnin.jsonl"
    records = write_log(log, 60, seed=4, unreachable=0.3)
    hostile = "[red]boom[/red]\x1b[2J"  # rich markup and a terminal escape, as a code
    edited = 0
    for r in records:
        if r["bucket"] == "v2-unreachable" and edited < 2:
            r["v2"]["error"] = f"{hostile}: detail the server echoed"
            edited += 1
    first = next(r for r in records if r["bucket"] == "exact")
    first["bucket"] = "both-unreachable"  # v1 unreachable too, logged without an error
    first["v1"].update(text=None, error=None)
    first["v2"].update(text=None, error="timeout")
    log.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    out = invoke("bench", "--log", log, "--json")
    assert out.exit_code == 0, out.output
    got = orjson.loads(out.output)["unreachable_errors"]
    n503 = sum(r["bucket"] == "v2-unreachable" for r in records) - edited
    assert edited == 2 and n503 > 2
    assert got == {"v1": {"unknown": 1},
                   "v2": {"http-503": n503, hostile: 2, "timeout": 1}}
    assert list(got["v2"]) == ["http-503", hostile, "timeout"]  # most frequent first
    text = invoke("bench", "--log", log)
    assert text.exit_code == 0, text.output
    assert "unreachable rounds by error code" in text.output
    assert "[red]boom[/red]" in text.output and "\x1b" not in text.output
    assert "detail the server echoed" not in text.output  # the code only
