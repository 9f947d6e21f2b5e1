"""``report --html``: the one-file report opened from file:// in Chromium, network blocked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from shadow_burnin.cli import cli
from shadow_burnin.render.escape import term
from shadow_burnin.render.html_views import pct
from tests.web.conftest import KnownLog, page_of
from tests.web.test_dashboard_browser import bench_json, no_injection

pytestmark = pytest.mark.timeout(300)


def write_report(log: Path, target: Path, *args: str) -> str:
    out = CliRunner().invoke(cli, ["report", "--log", str(log), "--html", str(target), *args],
                             catch_exceptions=False)
    assert out.exit_code == 0, out.output
    return out.stdout


def test_report_offline_in_chromium(known_log: KnownLog, tmp_path: Path, browser: Any,
                                    shots: Path) -> None:
    target = tmp_path / "report.html"
    said = write_report(known_log.path, target, "--divergences", "50")
    assert f"{target.stat().st_size:,} bytes" in said
    html = target.read_text()
    assert html.startswith("<!-- shadow-burnin:report -->\n")
    assert "<script" not in html.split("<main", 1)[0]  # no script of ours at all
    expected = bench_json(known_log.path)
    w = page_of(browser, offline=True)
    requests: list[str] = []
    w.page.on("request", lambda r: requests.append(r.url))
    w.page.goto(target.as_uri())
    assert [u for u in requests if not u.startswith("file://")] == []
    assert w.page.locator("[data-figure=rounds]").inner_text() == f"{expected['rounds']:,}"
    assert w.page.locator("[data-figure=exact_match_rate]").inner_text() == \
        pct(expected["exact_match_rate"])
    for bucket, n in expected["counts"].items():
        assert w.page.locator(f"[data-bucket={bucket}]").inner_text() == f"{n:,}"
    for name, n in {"exact": 1, "latency": 5, "counts": 3, "cdf": 2, "category": 1}.items():
        svg = w.page.locator(f"svg.plot[data-plot={name}]")
        assert svg.locator("g.series").count() == n
        assert svg.locator("circle, rect").count() > 0
    assert w.page.locator("table.gates tr[data-gate]").count() == len(expected["gates"]["gates"])
    # the worst prompts and every divergent parity round, side by side (50 > 28 here)
    divergent = [r for r in known_log.rounds() if r["bucket"] in ("prefix-only", "no-match")]
    assert w.page.locator("section.round").count() == len(divergent)
    for rec in divergent:
        box = w.page.locator(f"#round-{rec['round']}")
        for side in ("v1", "v2"):
            assert box.locator(f"pre[data-text={side}]").text_content() == \
                term(rec[side]["text"])
    assert w.page.locator("h2", has_text="Worst prompts").count() == 1
    # the run-level verdict, as bench says it
    rv = expected["forensics"]["run_verdict"]
    assert w.page.locator("p.run-verdict").inner_text() == rv["explanation"]
    assert w.page.locator("h2", has_text="Run-level verdict").locator(
        ".pill").text_content() == rv["decision"]
    no_injection(w)
    w.page.screenshot(path=str(shots / "report.png"), full_page=True)
    assert w.console_errors == []


def test_report_window_and_refusals(known_log: KnownLog, tmp_path: Path) -> None:
    target = tmp_path / "r.html"
    first = known_log.rounds()[0]["ts"]
    mid = known_log.rounds()[59]["ts"]
    write_report(known_log.path, target, "--since", first, "--until", mid)
    assert 'data-figure="rounds">59<' in target.read_text()
    # written again over its own output: fine; over another file, the log, a side file: no
    write_report(known_log.path, target)
    other = tmp_path / "notes.html"
    other.write_text("<p>mine</p>")
    for bad in (other, known_log.path, known_log.path.with_name("burnin.jsonl.events.jsonl")):
        before = bad.read_bytes()
        out = CliRunner().invoke(cli, ["report", "--log", str(known_log.path), "--html",
                                       str(bad)])
        assert out.exit_code == 2 and str(bad) in out.stderr
        assert bad.read_bytes() == before
    out = CliRunner().invoke(cli, ["report", "--log", str(tmp_path / "none.jsonl"), "--html",
                                   str(tmp_path / "x.html")])
    assert out.exit_code == 2 and "no such log file" in out.stderr
    assert not (tmp_path / "x.html").exists()
