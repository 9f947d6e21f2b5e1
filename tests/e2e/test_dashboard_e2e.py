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
from shadow_burnin.render.escape import term
from shadow_burnin.render.html_views import pct
from tests.servers.scripted import REPO_ROOT
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


def start_xllama(model: Path, *extra: str) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.e2e.xllama", str(model), str(port),
                             *extra], cwd=REPO_ROOT, env=child_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # READY once loaded (or EOF if it died)
    if line.strip() != b"READY":
        stop(proc)
        pytest.fail(f"xllamacpp server did not start: {line!r}", pytrace=False)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):  # bounded: /health answers 200 once serving
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return url, proc
        except (urllib.error.URLError, OSError):
            time.sleep(0.05)
    stop(proc)
    pytest.fail("xllamacpp server never became healthy", pytrace=False)


@pytest.fixture(scope="module")
def xpair() -> Iterator[tuple[str, str]]:
    import importlib.util

    if importlib.util.find_spec("xllamacpp") is None:  # fail, never skip
        pytest.fail("this e2e test needs xllamacpp (pip install xllamacpp)", pytrace=False)
    model = ensure_model()
    v1, p1 = start_xllama(model)
    try:
        v2, p2 = start_xllama(model, "64")
        try:
            yield v1, v2
        finally:
            stop(p2)
    finally:
        stop(p1)


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
