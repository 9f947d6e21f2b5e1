"""The dashboard in a real Chromium (Debian's, driven by Playwright) over ``serve``."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from shadow_burnin.render.escape import term
from shadow_burnin.render.html_views import pct
from shadow_burnin.render.text import visible
from tests.web.conftest import HOSTILE, KnownLog, Watched, page_of, start_serve, stop

pytestmark = pytest.mark.timeout(300)


def bench_json(log: Path) -> dict[str, Any]:
    from click.testing import CliRunner

    from shadow_burnin.cli import cli

    out = CliRunner().invoke(cli, ["bench", "--log", str(log), "--json"],
                             catch_exceptions=False)
    assert out.exit_code == 0, out.output
    return orjson.loads(out.stdout)


def no_injection(w: Watched) -> None:
    page = w.page
    assert page.locator("#injected").count() == 0
    assert page.locator("#injected-img").count() == 0
    assert page.locator("main img").count() == 0
    assert page.locator("main script").count() == 0
    assert page.locator("main a[href^='javascript']").count() == 0
    assert page.evaluate("() => window.__pwned === undefined")
    assert w.dialogs == []
    assert w.page_errors == []


def test_overview_headlines_equal_bench(serve: tuple[str, Any], known_log: KnownLog,
                                        browser: Any, shots: Path) -> None:
    url, _ = serve
    expected = bench_json(known_log.path)
    w = page_of(browser)
    w.page.goto(url + "/")
    fig = w.page.locator
    assert fig("[data-figure=rounds]").inner_text() == f"{expected['rounds']:,}"
    assert fig("[data-figure=exact_match_rate]").inner_text() == \
        pct(expected["exact_match_rate"])
    lo, hi = expected["exact_match_ci95"]
    assert f"{pct(lo)} – {pct(hi)}" in fig(".card.accent .sub").inner_text()
    for bucket, n in expected["counts"].items():
        assert fig(f"[data-bucket={bucket}]").inner_text() == f"{n:,}"
    gates = {g["gate"]: g["state"] for g in expected["gates"]["gates"]}
    # the halt lives in <log>.events.jsonl (the events contract), which the dashboard
    # reads: its gate fails whatever an older bench made of the round log alone
    gates["halt"] = "fail"
    rows = fig("table.gates tr[data-gate]")
    assert rows.count() == len(gates)
    for i in range(rows.count()):
        row = rows.nth(i)
        state = gates[row.get_attribute("data-gate")]
        assert f"state-{state}" in row.get_attribute("class")
        assert row.locator(".sym").text_content() == {"pass": "✓", "fail": "✗",
                                                     "waiting": "⌛"}[state]
    # the halt written to <log>.events.jsonl is shown as active
    assert fig("[data-figure=halt]").inner_text() == "ACTIVE"
    assert "A/A" in fig("main").inner_text()
    w.page.screenshot(path=str(shots / "overview.png"), full_page=True)
    assert w.console_errors == []


def test_every_plot_renders_its_series(serve: tuple[str, Any], known_log: KnownLog,
                                       browser: Any, shots: Path) -> None:
    url, _ = serve
    w = page_of(browser)
    w.page.goto(url + "/plots")
    rounds = known_log.rounds()
    parity = [r for r in rounds if r["bucket"] in ("exact", "prefix-only", "no-match")]
    v1_replied = [r for r in rounds if r["bucket"] not in ("v1-unreachable",
                                                           "both-unreachable")]
    # the log spans an hour, one round every 30 s: one bin per round (30 s bins)
    expected = {
        "exact": {"exact match": len(parity)},
        "latency": {"v1 p50": len(v1_replied), "v1 p95": len(v1_replied)},
        "counts": {"no-match": len(rounds), "v1 unreachable": len(rounds)},
        "cdf": {"v1": 101, "v2": 101},
        "category": {"Exact-match rate by category": 3},
    }
    series_count = {"exact": 1, "latency": 5, "counts": 3, "cdf": 2, "category": 1}
    for name, n in series_count.items():
        svg = w.page.locator(f"svg.plot[data-plot={name}]")
        assert svg.count() == 1, name
        assert svg.locator("g.series").count() == n, name
        box = svg.bounding_box()
        assert box and box["width"] > 200 and box["height"] > 40
        for series, points in expected[name].items():
            g = svg.locator(f'g.series[data-series="{series}"]')
            assert g.get_attribute("data-points") == str(points), (name, series)
            marks = g.locator("circle, rect")
            assert marks.count() == points, (name, series)
    # hover text: every point carries its value
    first = w.page.locator("svg.plot[data-plot=exact] g.series circle").first
    assert "exact match:" in first.locator("title").text_content()
    assert w.page.locator("svg.plot[data-plot=exact] polygon.band").count() == 1
    w.page.screenshot(path=str(shots / "plots.png"), full_page=True)
    assert w.console_errors == []


def test_round_page_shows_both_texts_exactly(serve: tuple[str, Any], known_log: KnownLog,
                                             browser: Any, shots: Path) -> None:
    url, _ = serve
    w = page_of(browser)
    plain = next(r for r in known_log.rounds() if r["bucket"] == "prefix-only")
    w.page.goto(f"{url}/round/{plain['round']}")
    for side in ("v1", "v2"):
        assert w.page.locator(f"pre[data-text={side}]").text_content() == plain[side]["text"]
    # v1 ends where v2 goes on: v1's mark is its end, v2's the first character it adds
    assert w.page.locator("[data-side=v1] mark.div.end").count() == 1
    extra = plain["v2"]["text"][len(plain["v1"]["text"])]
    assert w.page.locator("[data-side=v2] mark.div").text_content() == extra
    w.page.screenshot(path=str(shots / "round-prefix.png"), full_page=True)
    for n in known_log.hostile_rounds:
        rec = next(r for r in known_log.rounds() if r["round"] == n)
        w.page.goto(f"{url}/round/{n}")
        for side in ("v1", "v2"):
            got = w.page.locator(f"pre[data-text={side}]").text_content()
            # exactly the log's text; a control character (ESC, NUL) shown as ⟨U+XXXX⟩
            assert got == term(rec[side]["text"])
        assert w.page.locator("mark.div").count() == 2
        assert "regression" in w.page.locator("main").inner_text()
        # the tokens around the divergence, the hostile one shown as text
        v2_tokens = w.page.locator("[data-tokens=v2] tr.at code")
        assert v2_tokens.first.text_content() == visible(rec["v2"]["text"], spaces=True)
        assert w.page.locator("[data-tokens=v1] tbody tr").count() == 2
        no_injection(w)
        if rec["v2"]["text"] == HOSTILE[0]:
            w.page.screenshot(path=str(shots / "round-hostile.png"), full_page=True)
    assert w.console_errors == []


def test_divergences_filter_and_open_a_round(serve: tuple[str, Any], known_log: KnownLog,
                                             browser: Any, shots: Path) -> None:
    url, _ = serve
    w = page_of(browser)
    w.page.goto(url + "/divergences")
    non_exact = [r for r in known_log.rounds() if r["bucket"] != "exact"]
    assert w.page.locator("table.divs tbody tr").count() == len(non_exact)
    w.page.screenshot(path=str(shots / "divergences.png"), full_page=True)
    w.page.select_option("select[name=bucket]", "no-match")
    w.page.select_option("select[name=category]", "code")
    w.page.click("form.filters button")
    w.page.wait_for_url("**/divergences?*")
    want = [r["round"] for r in non_exact if r["bucket"] == "no-match"
            and r["category"] == "code"]
    got = [int(x) for x in w.page.locator("table.divs tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.round)")]
    assert got == want and want
    w.page.click(f"table.divs a[href='/round/{want[0]}']")
    w.page.wait_for_url(f"**/round/{want[0]}")
    assert w.page.locator("pre[data-text=v1]").count() == 1
    no_injection(w)
    assert w.console_errors == []


def test_rounds_appended_appear_without_reload(serve: tuple[str, Any], known_log: KnownLog,
                                               browser: Any) -> None:
    url, _ = serve
    w = page_of(browser)
    w.page.goto(url + "/")
    w.page.evaluate("() => { window.__same_document = true; }")
    before = len(known_log.rounds())
    new = [known_log.next_round("no-match", text="<script>alert(9)</script>")]
    known_log.append(new)
    # a torn line (a run writing it) is not counted until complete
    torn = orjson.dumps(known_log.next_round())
    with open(known_log.path, "ab") as fh:
        fh.write(torn[:40])
    w.page.wait_for_function(
        f"() => document.querySelector('[data-figure=rounds]').textContent === "
        f"'{before + 1:,}'", timeout=20_000)
    with open(known_log.path, "ab") as fh:
        fh.write(torn[40:] + b"\n")
    w.page.wait_for_function(
        f"() => document.querySelector('[data-figure=rounds]').textContent === "
        f"'{before + 2:,}'", timeout=20_000)
    assert w.page.evaluate("() => window.__same_document === true")  # no reload
    no_injection(w)
    assert w.console_errors == []


@pytest.mark.parametrize("kind", ["missing", "foreign", "bad-line"])
def test_unreadable_log_gives_a_message_page(tmp_path: Path, browser: Any, kind: str) -> None:
    log = tmp_path / "x.jsonl"
    if kind == "foreign":
        log.write_text("this is not a burn-in log\nat all\n")
    elif kind == "bad-line":
        log.write_bytes(b'{"schema": 1, "round": 1}\n')
    url, proc = start_serve(log)
    try:
        w = page_of(browser)
        resp = w.page.goto(url + "/")
        assert resp is not None and resp.status == 503
        text = w.page.locator("main").inner_text()
        assert "cannot be shown" in text and str(log) in text
        assert "Traceback" not in w.page.content()
    finally:
        stop(proc)


def test_security_headers(serve: tuple[str, Any]) -> None:
    import urllib.request

    url, _ = serve
    with urllib.request.urlopen(url + "/") as resp:
        csp = resp.headers["Content-Security-Policy"]
        body = resp.read().decode()
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    assert "unsafe-inline" not in csp
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    # the only script is our static file: no inline script anywhere
    assert body.count("<script") == 1 and '<script src="/static/app.js" defer>' in body
    assert " style=" not in body


def test_auth_token_login_cookie_and_bearer(known_log: KnownLog, browser: Any,
                                            shots: Path) -> None:
    import urllib.error
    import urllib.request

    from tests.web.conftest import child_env

    token = "s3cret-token-for-the-test"
    url, proc = start_serve(known_log.path, "--auth-token-env", "SB_TEST_TOKEN",
                            env=child_env(SB_TEST_TOKEN=token))
    try:
        assert token not in " ".join(proc.args)  # never on the command line
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(url + "/metrics")
        assert err.value.code == 401
        req = urllib.request.Request(url + "/metrics",
                                     headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req) as resp:
            assert b"shadow_burnin_rounds_total" in resp.read()
        w = page_of(browser)
        w.page.goto(url + "/plots")
        assert w.page.url.endswith("/login")
        w.page.screenshot(path=str(shots / "login.png"))
        w.page.fill("input[name=token]", "wrong")
        w.page.click("form button")
        assert "wrong token" in w.page.locator("main").inner_text()
        w.page.fill("input[name=token]", token)
        w.page.click("form button")
        w.page.wait_for_selector("[data-figure=rounds]")
        assert token not in w.page.url
        cookie = next(c for c in w.page.context.cookies() if c["name"] == "sb_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert token not in cookie["value"]
        assert w.page.evaluate("() => document.cookie") == ""  # HttpOnly: not readable
        # the one console error: the wrong token's 401 answer
        assert len(w.console_errors) == 1 and "401" in w.console_errors[0]
    finally:
        stop(proc)


def test_non_loopback_host_warns_and_missing_token_env_is_refused(
        known_log: KnownLog, monkeypatch: pytest.MonkeyPatch) -> None:
    from aiohttp import web
    from click.testing import CliRunner

    from shadow_burnin.cli import cli

    ran: list[dict[str, Any]] = []
    monkeypatch.setattr(web, "run_app", lambda app, **kw: ran.append(kw))
    out = CliRunner().invoke(cli, ["serve", "--log", str(known_log.path), "--host",
                                   "0.0.0.0", "--port", "1"])
    assert out.exit_code == 0 and ran and ran[0]["host"] == "0.0.0.0"
    assert "warning" in out.stderr and "WITHOUT authentication" in out.stderr
    out = CliRunner().invoke(cli, ["serve", "--log", str(known_log.path),
                                   "--auth-token-env", "SB_NOT_SET_ANYWHERE"])
    assert out.exit_code == 2 and "SB_NOT_SET_ANYWHERE" in out.stderr
    assert len(ran) == 1


def test_serve_process_stops_cleanly(serve: tuple[str, subprocess.Popen[bytes]]) -> None:
    _url, proc = serve
    proc.terminate()
    assert proc.wait(10) is not None
