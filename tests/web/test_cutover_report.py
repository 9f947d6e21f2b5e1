"""``gates --write CUTOVER.md --report FILE``: the report written beside the document and
linked from it. The Markdown is rendered by a real CommonMark parser (markdown-it-py,
rich's own dependency) and the link followed in Chromium with the network blocked."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import orjson
import pytest
from click.testing import CliRunner
from markdown_it import MarkdownIt

from shadow_burnin.cli import cli
from shadow_burnin.render.cutover_report import link_target
from tests.web.conftest import KnownLog, page_of
from tests.web.test_dashboard_browser import bench_json, no_injection

pytestmark = pytest.mark.timeout(300)

HOSTILE_NAME = "r](javascript:alert(1)) <b>x<b> `t` *e* #h [l](x) (1).html"  # no "/"


def gates(log: Path, *args: str) -> Any:
    return CliRunner().invoke(cli, ["gates", "--log", str(log), *args])


def section(md: str) -> str:
    return md.split("## HTML report", 1)[1]


def links(md_text: str) -> list[tuple[str, str]]:
    """(href, text) of every link of the rendered Markdown."""
    html = MarkdownIt("commonmark").render(md_text)
    return re.findall(r'<a href="([^"]*)">(.*?)</a>', html)


def test_the_document_links_the_report_it_wrote(known_log: KnownLog, tmp_path: Path,
                                                browser: Any, shots: Path) -> None:
    doc = tmp_path / "post" / "CUTOVER.md"
    doc.parent.mkdir()
    (tmp_path / "attach").mkdir()
    report = tmp_path / "attach" / "burn-in report.html"
    out = gates(known_log.path, "--write", str(doc), "--report", str(report))
    assert out.exit_code in (0, 1, 3), out.output
    assert f"wrote {report}" in out.stdout and f"wrote {doc}" in out.stdout
    md = doc.read_text()
    data = report.read_bytes()
    assert data.startswith(b"<!-- shadow-burnin:report -->\n")
    part = section(md)
    # the link resolves, relative to the document, to the report it describes
    (href, text), = links(part)
    assert text == "burn-in report.html" and href == "../attach/burn-in%20report.html"
    assert (doc.parent / unquote(href)).resolve() == report.resolve()
    assert f"{len(data):,} bytes" in part
    assert hashlib.sha256(data).hexdigest() in part
    # the headline figures are the log's (bench's) and the document's own
    b = bench_json(known_log.path)
    exact = f"{100 * b['exact_match_rate']:.2f} %"
    lo, hi = (f"{100 * x:.2f} %" for x in b["exact_match_ci95"])
    assert f"exact match: {exact} of {b['parity_rounds']:,} parity rounds " \
           f"(95 % Wilson {lo} – {hi})" in part
    assert f"exact match: {exact}" in md.split("## HTML report")[0]
    for side in ("v1", "v2"):
        assert f"{side} {b['latency_ms'][side]['p95']:,.1f} ms" in part
    rv = b["forensics"]["run_verdict"]  # the same decision as bench's
    assert f"- run-level verdict: **{rv['decision']}** — " in part
    # follow the link in Chromium, offline: the report opens and is self-contained
    rendered = doc.with_suffix(".html")
    rendered.write_text(MarkdownIt("commonmark").render(md))
    w = page_of(browser, offline=True)
    requests: list[str] = []
    w.page.on("request", lambda r: requests.append(r.url))
    w.page.goto(rendered.as_uri())
    w.page.locator("a", has_text="burn-in report.html").click()
    w.page.wait_for_load_state()
    assert w.page.url == report.resolve().as_uri()
    assert w.page.locator("[data-figure=rounds]").inner_text() == f"{b['rounds']:,}"
    assert w.page.locator("svg.plot").count() >= 5
    assert [u for u in requests if not u.startswith("file://")] == []
    no_injection(w)
    w.page.screenshot(path=str(shots / "cutover-report-link.png"), full_page=False)
    w.page.context.close()


def test_a_hostile_report_name_cannot_break_the_markdown(known_log: KnownLog,
                                                         tmp_path: Path) -> None:
    doc = tmp_path / "CUTOVER.md"
    report = tmp_path / HOSTILE_NAME
    out = gates(known_log.path, "--write", str(doc), "--report", str(report))
    assert out.exit_code in (0, 1, 3), out.output
    part = section(doc.read_text())
    (href, _text), = links(part)  # one link, no second one smuggled in
    assert href == link_target(HOSTILE_NAME) and not href.startswith("javascript")
    assert (doc.parent / unquote(href)).resolve() == report.resolve()
    html = MarkdownIt("commonmark").render(part)
    assert "<b>" not in html and "<em>" not in html and "<code>t" not in html
    assert "<h1>" not in html


@pytest.mark.parametrize("case", ["no-write", "same", "log", "foreign"])
def test_bad_report_targets_are_refused_before_anything_is_written(
        known_log: KnownLog, tmp_path: Path, case: str) -> None:
    doc = tmp_path / "CUTOVER.md"
    target = {"no-write": tmp_path / "r.html", "same": doc,
              "log": known_log.path.with_name(known_log.path.name + ".events.jsonl"),
              "foreign": tmp_path / "mine.html"}[case]
    if case == "foreign":
        target.write_text("<p>somebody's page</p>")
    before = {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    args = ["--report", str(target)] if case == "no-write" else \
        ["--write", str(doc), "--report", str(target)]
    out = gates(known_log.path, *args)
    assert out.exit_code == 2, out.output
    assert len(out.stderr.strip().splitlines()) == 1 and str(target) in out.stderr
    assert not doc.exists()
    assert {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


def test_rewriting_the_document_and_report_is_allowed(known_log: KnownLog,
                                                      tmp_path: Path) -> None:
    doc, report = tmp_path / "CUTOVER.md", tmp_path / "report.html"
    for _ in range(2):  # our own files, with our markers: overwritten in place
        out = gates(known_log.path, "--write", str(doc), "--report", str(report), "--json")
        assert out.exit_code in (0, 1, 3), out.output
        assert orjson.loads(out.stdout)["rounds"] == len(known_log.rounds())
    assert doc.read_text().startswith("<!-- shadow-burnin:cutover -->")
