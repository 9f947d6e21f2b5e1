"""The one-file HTML report: overview, plots, gate table, worst prompts and the first
divergences side by side. Self-contained: the stylesheet inline, plots as inline SVG, no
script at all, and a Content-Security-Policy meta tag that forbids every fetch, so
opening the file makes no network access."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shadow_burnin.render import html_views as hv
from shadow_burnin.render.escape import html as esc

REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def run_verdict(rv: Mapping[str, Any] | None) -> str:
    """The run-level verdict (``core.runverdict``): decision and its one sentence."""
    if not rv:
        return ""
    state = {"noise": "pass", "changed": "fail"}.get(str(rv.get("decision")), "wait")
    return (f'<h2>Run-level verdict <span class="pill state-{state}">'
            f'{esc(rv.get("decision"))}</span></h2>'
            f'<p class="run-verdict">{esc(rv.get("explanation"))}</p>')


def report(ov: Mapping[str, Any], series: Mapping[str, Any], divs: Mapping[str, Any],
           first: list[dict[str, Any]], *, generated: str, window: str) -> str:
    shown = {d["round"] for d in first}
    items = divs["items"]
    body = [
        f'<h1>Burn-in report <span class="pill">{esc(ov["gates"]["verdict"])}</span></h1>',
        f'<p class="count">log <span class="mono">{esc(ov["log"])}</span> · {esc(window)} · '
        f"generated {esc(generated)}</p>",
        hv.overview(ov),
        run_verdict(ov.get("run_verdict")),
        "<h2>Plots</h2>", hv.plots(series),
        "<h2>Worst prompts</h2>", hv.worst_prompts(ov["top_divergent_prompts"]),
        f'<h2>Divergences ({divs["total"]:,}; the first {len(items):,} listed)</h2>',
        hv.divergence_rows(items, None),
        f"<h2>The first {len(first)} divergences side by side</h2>",
    ]
    for rec in first:
        if "shard" in rec:  # a fleet's report: round numbers repeat across shards
            body.append(f'<div id="round-{esc(rec["shard"])}-{esc(rec.get("round"))}">'
                        f'<p class="count">shard <span class="mono">{esc(rec["shard"])}'
                        f"</span></p>{hv.round_detail(rec)}</div>")
        else:
            body.append(f'<div id="round-{esc(rec.get("round"))}">{hv.round_detail(rec)}</div>')
    if not shown:
        body.append("<p class='count'>no divergent round in this window</p>")
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{REPORT_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>shadow-burnin report · {esc(ov["gates"]["verdict"])}</title>'
        f"<style>{hv.stylesheet()}</style></head><body>"
        '<header class="top"><div class="brand">shadow-burnin<small>burn-in report</small>'
        f'</div></header><main id="main">{"".join(body)}</main>'
        "<footer>Figures from the log by the same reader as <code>bench</code>; this file "
        "is self-contained (no script, no network).</footer></body></html>\n")
