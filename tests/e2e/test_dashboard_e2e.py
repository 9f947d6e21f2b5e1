"""The dashboard and /metrics over a burn-in of two real llama.cpp servers (xllamacpp on
the Gemma 3 270M model), in Debian's Chromium: what the pages and the scrape say equals
the log and ``bench``."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from shadow_burnin.cli.demo import write_demo_prompts
from shadow_burnin.core.records import BUCKETS
from shadow_burnin.io.servers.llama_build import ensure_model
from shadow_burnin.io.servers.xllama import XllamaSettings, xllama_server
from shadow_burnin.render.escape import term
from shadow_burnin.render.html_views import pct
from tests.e2e.conftest import require_demo_extra, running
from tests.web.conftest import (
    CHROMIUM,
    CHROMIUM_ARGS,
    child_env,
    free_port,
    page_of,
    shots,
    start_serve,
    stop,
)
from tests.web.test_dashboard_browser import bench_json, no_injection
from tests.web.test_metrics import log_rounds, scrape

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]
__all__ = ["shots"]  # the screenshot directory fixture, shared with tests/web


@pytest.fixture(scope="module")
def xpair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    require_demo_extra()  # fail, never skip
    model = ensure_model()
    logs = tmp_path_factory.mktemp("xpair-logs")
    v1 = xllama_server(model, XllamaSettings(), name="v1", log_path=logs / "v1.log")
    v2 = xllama_server(model, XllamaSettings(batch=64, ubatch=64), name="v2",
                       log_path=logs / "v2.log")
    with running(v1, "v1 (xllamacpp)"), running(v2, "v2 (xllamacpp, batch 64)"):
        yield str(v1.url), str(v2.url)


def test_dashboard_and_metrics_over_a_real_burnin(xpair: tuple[str, str], tmp_path: Path,
                                                   shots: Path) -> None:
    from playwright.sync_api import sync_playwright

    v1, v2 = xpair
    log = tmp_path / "real.jsonl"
    prompts = write_demo_prompts(tmp_path / "prompts.jsonl")
    port = free_port()
    run = subprocess.Popen(
        [sys.executable, "-m", "shadow_burnin", "run", "--v1", v1, "--v2", v2,
         "--api", "completions", "--max-tokens", "12", "--rounds", "6", "--interval", "0",
         "--prompts", str(prompts), "--log", str(log), "--seed", "3", "--logprobs", "0",
         "--refire", "0", "--aa-every", "0", "--metrics-port", str(port), "--quiet"],
        env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    scrapes: list[float] = []
    try:
        for _ in range(600):  # bounded polling while the burn-in goes
            if run.poll() is not None:
                break
            try:
                m = scrape(f"http://127.0.0.1:{port}")
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.05)
                continue
            if m.get(("shadow_burnin_log_readable", ())) == 1.0:
                scrapes.append(sum(m[("shadow_burnin_rounds_total", (("bucket", b),))]
                                   for b in BUCKETS))
            time.sleep(0.1)
        _out, err = run.communicate(timeout=300)
        assert run.returncode == 0, err.decode()
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    rounds = log_rounds(log)
    assert len(rounds) == 6
    assert scrapes and scrapes == sorted(scrapes) and scrapes[-1] <= 6  # scraped mid-run
    expected = bench_json(log)
    url, proc = start_serve(log)
    try:
        m = scrape(url)
        for b in BUCKETS:
            assert m[("shadow_burnin_rounds_total", (("bucket", b),))] == \
                sum(r["bucket"] == b for r in rounds)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                w = page_of(browser)
                w.page.goto(url + "/")
                assert w.page.locator("[data-figure=rounds]").inner_text() == "6"
                assert w.page.locator("[data-figure=exact_match_rate]").inner_text() == \
                    pct(expected["exact_match_rate"])
                w.page.screenshot(path=str(shots / "real-overview.png"), full_page=True)
                w.page.goto(url + "/plots")
                assert w.page.locator("svg.plot g.series").count() == 12
                for r in rounds[:3]:
                    w.page.goto(f"{url}/round/{r['round']}")
                    for side in ("v1", "v2"):
                        assert w.page.locator(f"pre[data-text={side}]").text_content() == \
                            term(r[side]["text"])
                w.page.screenshot(path=str(shots / "real-round.png"), full_page=True)
                no_injection(w)
                assert w.console_errors == []
            finally:
                browser.close()
    finally:
        stop(proc)
