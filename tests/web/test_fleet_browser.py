"""``serve`` over several logs (a fleet) in a real Chromium: the pooled overview with a
per-shard table, each shard's own pages (``?shard=``), the pooled divergence list naming
each row's shard and opening the round of the right shard, a halt in one shard shown,
live updates from any shard, hostile shard names escaped."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest

from shadow_burnin.core.halt import HALT_EVENT
from shadow_burnin.io.log.events import append_event
from shadow_burnin.render.escape import term
from shadow_burnin.render.html_views import pct
from tests.cli.test_fleet_views import HOSTILE_SHARD, fleet
from tests.fleet.logs import write_log
from tests.web.conftest import page_of, start_serve, stop
from tests.web.test_dashboard_browser import bench_json, no_injection

pytestmark = pytest.mark.timeout(300)


def status_of(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_fleet_dashboard_pools_lists_shards_and_opens_each(tmp_path: Path, browser: Any,
                                                           shots: Path) -> None:
    root = tmp_path / "fleet"
    records = fleet(root)
    append_event(root / "b" / "burnin.jsonl",
                 {"event": HALT_EVENT, "ts": "2026-05-28T20:30:00.000Z", "round": 40})
    glob = root / "*" / "burnin.jsonl"
    pooled = bench_json(glob)
    url, proc = start_serve(glob)
    try:
        w = page_of(browser)
        fig = w.page.locator
        w.page.goto(url + "/")
        # the pooled overview: bench's pooled figures, the halt of shard b
        assert fig("[data-figure=rounds]").inner_text() == f"{pooled['rounds']:,}" == "100"
        assert fig("[data-figure=exact_match_rate]").inner_text() == \
            pct(pooled["exact_match_rate"])
        assert fig("[data-figure=shard]").inner_text() == "all shards (pooled)"
        assert fig("[data-figure=halt]").inner_text() == "ACTIVE"
        rows = fig("table.shards tbody tr")
        assert rows.count() == 3
        for i, host in enumerate(sorted(records)):
            row = rows.nth(i)
            assert row.locator("td").nth(0).inner_text() == f"{host}/burnin.jsonl"
            alone = bench_json(root / host / "burnin.jsonl")
            assert row.locator("td").nth(1).inner_text() == f"{alone['rounds']:,}"
            assert row.locator("td").nth(3).inner_text() == pct(alone["exact_match_rate"])
            assert row.locator("td").nth(6).inner_text() == ("ACTIVE" if host == "b" else "none")
        w.page.screenshot(path=str(shots / "fleet-overview.png"), full_page=True)
        # one shard's pages: the hostile-named one, chosen from the table
        name = f"{HOSTILE_SHARD}/burnin.jsonl"
        fig("table.shards a", has_text=HOSTILE_SHARD).click()
        w.page.wait_for_url("**/?shard=*")
        assert fig("[data-figure=shard]").inner_text() == name
        assert fig("[data-figure=rounds]").inner_text() == f"{len(records[HOSTILE_SHARD]):,}"
        assert fig("table.shards").count() == 0
        assert fig("nav a[href*='shard=']").count() == 3  # the shard kept on every link
        fig("nav a", has_text="divergences").click()
        w.page.wait_for_url("**/divergences?shard=*")
        own = [r for r in records[HOSTILE_SHARD] if r["bucket"] != "exact"]
        assert fig("table.divs tbody tr").count() == len(own) > 0
        fig("table.divs tbody a").first.click()
        w.page.wait_for_url("**/round/*?shard=*")
        assert fig("pre[data-text=v1]").text_content() == term(own[0]["v1"]["text"])
        # the pooled divergence list: every shard's, a shard column, the right round
        w.page.goto(url + "/divergences")
        every = [(h, r) for h, rs in records.items() for r in rs if r["bucket"] != "exact"]
        assert fig("table.divs tbody tr").count() == len(every)
        assert fig("table.divs th", has_text="shard").count() == 1
        host, rec = next((h, r) for h, r in every if h == "b" and r["round"] > 30
                         and r["bucket"] != "v2-unreachable")
        link = f"/round/{rec['round']}?shard={quote('b/burnin.jsonl', safe='')}"
        fig(f"table.divs a[href='{link}']").click()
        w.page.wait_for_url(f"**{link}")
        assert fig("pre[data-text=v2]").text_content() == term(rec["v2"]["text"])
        no_injection(w)
        assert w.console_errors == []
        # a round without its shard, a shard that is not one: a message, not a guess
        assert status_of(url + "/round/3") == 404
        assert status_of(url + "/?shard=" + quote("zz/burnin.jsonl")) == 404
        # live: a round appended to one shard shows in the pooled overview
        w.page.goto(url + "/")
        w.page.evaluate("() => { window.__same_document = true; }")
        write_log(root / "a" / "burnin.jsonl", 1, seed=9, first=31, t0=1_780_000_100.0)
        w.page.wait_for_function(
            "() => document.querySelector('[data-figure=rounds]').textContent === '101'",
            timeout=20_000)
        assert w.page.evaluate("() => window.__same_document === true")
    finally:
        stop(proc)


def test_fleet_metrics_pool_every_shard(tmp_path: Path) -> None:
    root = tmp_path / "fleet"
    records = fleet(root)
    url, proc = start_serve(root / "*" / "burnin.jsonl")
    try:
        with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
            text = resp.read().decode()
    finally:
        stop(proc)
    unreachable = sum(r["bucket"] == "v2-unreachable" for rs in records.values() for r in rs)
    assert unreachable > 0
    line = next(x for x in text.splitlines() if x.startswith("shadow_burnin_errors_total")
                and 'code="http-503"' in x and 'side="v2"' in x)
    assert float(line.rsplit(" ", 1)[1]) == unreachable
    per_bucket = [x for x in text.splitlines() if x.startswith("shadow_burnin_rounds_total")]
    assert sum(orjson.loads(x.rsplit(" ", 1)[1]) for x in per_bucket) == 100
