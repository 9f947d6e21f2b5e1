"""HTML fragments for the dashboard and the one-file report, from ``app.dashboard``'s view
models. Every string that came from data goes through ``escape.html`` exactly once here;
numbers are formatted here. No inline script and no style attribute anywhere (the web
app's Content-Security-Policy forbids both).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib.resources import files
from typing import Any
from urllib.parse import urlencode

from shadow_burnin.core.gates import format_value
from shadow_burnin.core.records import BUCKETS, SIDES
from shadow_burnin.render.escape import html as esc
from shadow_burnin.render.escape import json_bytes as escape_json
from shadow_burnin.render.svg import Band, Chart, Series, bar_chart, line_chart
from shadow_burnin.render.text import char_offset, visible

SYMBOL = {"pass": "✓", "fail": "✗", "waiting": "⌛"}
# fonts without an emoji face draw ⌛ as a box: an SVG hourglass is drawn and the
# character kept in the text (screen readers, copy and paste, tests)
HOURGLASS = ('<svg class="icon" viewBox="0 0 12 16" aria-hidden="true" '
             'xmlns="http://www.w3.org/2000/svg"><path d="M1 1h10M1 15h10M2 1c0 5 8 5 8 7'
             's-8 2-8 7M10 1c0 5-8 5-8 7s8 2 8 7"/></svg>')


def symbol(state: str) -> str:
    glyph = SYMBOL.get(state, "?")
    if state == "waiting":
        return f'{HOURGLASS}<span class="sr">{glyph}</span>'
    return esc(glyph)


def stylesheet() -> str:
    return files("shadow_burnin.render").joinpath("assets/style.css").read_text("utf-8")


def pct(v: float | None, digits: int = 2) -> str:
    return "—" if v is None else f"{100 * v:.{digits}f} %"


def ms(v: float | None) -> str:
    return "—" if v is None else f"{v:,.0f} ms" if abs(v) >= 100 else f"{v:.1f} ms"


def num(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def _card(label: str, value: str, sub: str = "", key: str = "", css: str = "",
          icon: str = "") -> str:
    icon = f'<span class="icon-wrap">{icon}</span>' if icon else ""
    return (f'<div class="card {esc(css)}"><div class="label">{esc(label)}</div>'
            f'<div class="value">{icon}<span data-figure="{esc(key)}">{esc(value)}</span>'
            "</div>"
            f'<div class="sub">{esc(sub)}</div></div>')


def overview(ov: Mapping[str, Any], shard_link: Callable[[str], str] | None = None) -> str:
    """The overview's cards and tables; a fleet's (``ov["shards"]``) also its per-shard
    table, each shard linked by ``shard_link`` (None: plain names)."""
    ci = ov.get("exact_match_ci95")
    gates = ov["gates"]
    verdict = gates["verdict"]
    halt = ov["halt"]
    lat = ov["latency_ms"]
    cards = [
        _card("rounds", f"{ov['rounds']:,}", f"{ov['parity_rounds']:,} with both replies",
              "rounds"),
        _card("exact match", pct(ov["exact_match_rate"]),
              f"95 % CI {pct(ci[0])} – {pct(ci[1])}" if ci else "no parity rounds yet",
              "exact_match_rate", "accent"),
        _card("p95 latency v1 / v2",
              f"{ms((lat['v1'] or {}).get('p95'))} / {ms((lat['v2'] or {}).get('p95'))}",
              f"p95 gap {ms(ov['p95_gap_ms'])}", "p95"),
        _card("cutover verdict", verdict,
              f"{sum(g['state'] == 'pass' for g in gates['gates'])}/{len(gates['gates'])} "
              "gates pass", "verdict", f"state-{verdict}", symbol(verdict)),
        _card("halt", "ACTIVE" if halt["active"] else "none",
              f"{halt['halts']} halt(s), {halt['acks']} ack(s)", "halt",
              "state-fail" if halt["active"] else "state-pass"),
    ]
    out = ['<section class="cards">', *cards, "</section>"]
    if ov.get("shards"):
        out.append("<h2>Shards</h2>" + shards_table(ov["shards"], shard_link))
    out.append('<section class="grid2"><div>')
    out.append("<h2>Buckets</h2>" + bucket_table(ov))
    out.append("<h2>A/B beside A/A (noise floor)</h2>" + aa_table(ov))
    out.append("</div><div><h2>Cutover gates</h2>" + gate_table(gates))
    out.append(state_block(ov))
    out.append("</div></section>")
    if ov.get("notes"):
        out.append('<section class="notes"><h2>Notes</h2><ul>' +
                   "".join(f"<li>{esc(n)}</li>" for n in ov["notes"]) + "</ul></section>")
    return "".join(out)


def shards_table(rows: list[Mapping[str, Any]], link: Callable[[str], str] | None) -> str:
    """One row per shard of a fleet: its rounds, exact match, unreachable, p95s, halt and
    verdict (a halt in any shard shows here, and in the pooled halt card)."""
    body = []
    for r in rows:
        name = esc(r["shard"])
        cell = f'<a href="{esc(link(r["shard"]))}">{name}</a>' if link else name
        un, p95 = r["unreachable_rate"], r["p95"]
        body.append(
            f'<tr data-shard="{name}"><td class="mono">{cell}</td>'
            f'<td class="num">{r["rounds"]:,}</td><td class="num">{r["parity_rounds"]:,}</td>'
            f'<td class="num">{pct(r["exact_match_rate"])}</td>'
            f'<td class="num">{pct(un["v1"])} / {pct(un["v2"])}</td>'
            f'<td class="num">{ms(p95["v1"])} / {ms(p95["v2"])}</td>'
            f'<td class="{"state-fail" if r["halt"] else "state-pass"}">'
            f'{"ACTIVE" if r["halt"] else "none"}</td><td>{esc(r["verdict"])}</td>'
            f'<td class="mono">{esc(r["last_ts"] or "—")}</td></tr>')
    return ('<table class="t shards"><thead><tr><th>shard</th><th class="num">rounds</th>'
            '<th class="num">both replied</th><th class="num">exact match</th>'
            '<th class="num">unreachable v1 / v2</th><th class="num">p95 v1 / v2</th>'
            "<th>halt</th><th>verdict</th><th>last round</th></tr></thead><tbody>"
            + "".join(body) + "</tbody></table>")


def bucket_table(ov: Mapping[str, Any]) -> str:
    n = ov["rounds"] or 1
    rows = "".join(
        f'<tr class="b-{esc(b)}"><td><span class="dot"></span>{esc(b)}</td>'
        f'<td class="num" data-bucket="{esc(b)}">{ov["counts"][b]:,}</td>'
        f'<td class="num">{pct(ov["counts"][b] / n, 1)}</td></tr>' for b in BUCKETS)
    return ('<table class="t buckets"><thead><tr><th>bucket</th><th class="num">rounds</th>'
            f'<th class="num">share</th></tr></thead><tbody>{rows}</tbody></table>')


def aa_table(ov: Mapping[str, Any]) -> str:
    aa = ov.get("aa") or {}
    ci = ov.get("exact_match_ci95")
    aci = aa.get("aa_exact_ci95")
    rows = [("A/B (v1 vs v2)", ov["exact_match_rate"], ci, ov["parity_rounds"]),
            ("A/A (a server vs itself)", aa.get("aa_exact_rate"), aci, aa.get("parity", 0))]
    body = "".join(
        f"<tr><td>{esc(name)}</td><td class='num'>{pct(rate)}</td>"
        f"<td class='num'>{esc(f'{pct(c[0])} – {pct(c[1])}' if c else '—')}</td>"
        f"<td class='num'>{num(k)}</td></tr>" for name, rate, c, k in rows)
    return ('<table class="t"><thead><tr><th></th><th class="num">exact</th>'
            '<th class="num">95 % CI</th><th class="num">rounds</th></tr></thead>'
            f"<tbody>{body}</tbody></table>")


def gate_table(gates: Mapping[str, Any]) -> str:
    rows = []
    for g in gates["gates"]:
        interval = g.get("interval")
        cur = format_value(g["metric"], g["current"])
        if interval:
            cur += (f" [{format_value(g['metric'], interval[0])}, "
                    f"{format_value(g['metric'], interval[1])}]")
        rows.append(f'<tr class="state-{esc(g["state"])}" data-gate="{esc(g["gate"])}">'
                    f'<td class="sym">{symbol(g["state"])}</td><td>{esc(g["label"])}</td>'
                    f'<td class="num">{esc(cur)}</td><td class="reason">{esc(g["reason"])}'
                    "</td></tr>")
    return ('<table class="t gates"><thead><tr><th></th><th>gate</th><th class="num">'
            "current</th><th>why</th></tr></thead><tbody>" + "".join(rows) +
            "</tbody></table>")


def state_block(ov: Mapping[str, Any]) -> str:
    halt = ov["halt"]
    h = halt.get("halt") or {}
    out = ['<h2>Halt and cutover</h2><dl class="kv">']
    active = "active since " + esc(h.get("ts")) if halt["active"] else "none active"
    out.append(f"<dt>halt</dt><dd>{active}</dd>")
    if halt.get("last_ack"):
        a = halt["last_ack"]
        out.append(f"<dt>last ack</dt><dd>{esc(a.get('ts'))}: {esc(a.get('reason'))}</dd>")
    c = ov.get("cutover")
    state = esc(c.get("event")) + " at " + esc(c.get("ts")) if c else "not cut over"
    out.append(f"<dt>cutover</dt><dd>{state}</dd>")
    out.append(f"<dt>log</dt><dd class='mono'>{esc(ov['log'])}</dd>")
    out.append(f"<dt>time span</dt><dd>{esc(ov.get('first_ts') or '—')} → "
               f"{esc(ov.get('last_ts') or '—')}</dd></dl>")
    return "".join(out)


def _pts(bins: list[dict[str, Any]], key: str | Callable[[dict[str, Any]], Any]
         ) -> list[tuple[float, float | None]]:
    get = key if callable(key) else (lambda b: b.get(key))  # type: ignore[misc]
    return [(float(b["t"]), get(b)) for b in bins]


def plots(s: Mapping[str, Any]) -> str:
    bins = s["bins"]
    width = s["width"]
    per = f"per {width // 3600} h" if width >= 3600 and width % 3600 == 0 else \
        f"per {width // 60} min" if width >= 60 else f"per {width} s"
    band = Band("band-exact", [(float(b["t"]), b["ci"][0], b["ci"][1]) for b in bins
                               if b["ci"]])
    charts = [
        line_chart(Chart("exact", f"Exact-match rate with its 95 % interval ({per})",
                         [Series("exact match", "s-exact", _pts(bins, "exact_rate"),
                                 lambda v: f"{100 * v:.2f} %")],
                         band=band, y_min=0.0, y_max=1.0)),
        line_chart(Chart("latency", f"Latency p50 / p95 per side and the p95 gap ({per})", [
            Series("v1 p50", "s-v1 thin", _pts(bins, "v1_p50"), ms),
            Series("v1 p95", "s-v1", _pts(bins, "v1_p95"), ms),
            Series("v2 p50", "s-v2 thin", _pts(bins, "v2_p50"), ms),
            Series("v2 p95", "s-v2", _pts(bins, "v2_p95"), ms),
            Series("p95 gap (v2 − v1)", "s-gap", _pts(bins, "gap_p95"), ms),
        ], y_label="ms")),
        line_chart(Chart("counts", f"No-match and unreachable rounds ({per})", [
            Series("no-match", "s-nomatch", _pts(bins, "no_match"), lambda v: f"{v:,.0f}"),
            Series("v1 unreachable", "s-v1", _pts(bins, lambda b: b["unreachable"]["v1"]),
                   lambda v: f"{v:,.0f}"),
            Series("v2 unreachable", "s-v2", _pts(bins, lambda b: b["unreachable"]["v2"]),
                   lambda v: f"{v:,.0f}"),
        ], y_label="rounds")),
        line_chart(Chart("cdf", "Latency distribution (CDF) per side", [
            Series(f"{side}", f"s-{side}", [(x, q) for x, q in s["cdf"][side]
                                            if x is not None],
                   lambda v: f"{100 * v:.0f} %") for side in SIDES
        ], x_time=False, y_min=0.0, y_max=1.0, x_fmt=lambda v: f"{v:,.0f} ms")),
        bar_chart("category", "Exact-match rate by category",
                  [c["category"] for c in s["categories"]],
                  [c["exact_rate"] for c in s["categories"]],
                  lambda v: f"{100 * v:.1f} %",
                  [f"({c['parity']:,} rounds)" for c in s["categories"]]),
    ]
    return '<section class="plots">' + "".join(charts) + "</section>"


def divergence_rows(items: list[dict[str, Any]],
                    link: Callable[[dict[str, Any]], str] | None) -> str:
    """The divergence list; rows of several shards (``"shard"`` in a row) get a shard
    column. ``link``: a row's round page (None: no links)."""
    rows = []
    shards = any("shard" in d for d in items)
    for d in items:
        r = d["round"]
        cell = f'<a href="{esc(link(d))}">#{r}</a>' if link else f"#{r}"
        shard = f'<td class="mono">{esc(d.get("shard", ""))}</td>' if shards else ""
        rows.append(
            f'<tr class="b-{esc(d["bucket"])}" data-round="{r}"><td>{cell}</td>{shard}'
            f'<td class="mono">{esc(d["ts"])}</td><td>{esc(d["category"])}</td>'
            f'<td class="mono">{esc(d["prompt_id"])}</td><td><span class="dot"></span>'
            f'{esc(d["bucket"])}</td><td>{esc(d["verdict"] or "—")}</td>'
            f'<td>{esc(d["refire"] or "—")}</td><td class="num">{num(d["prefix_chars"])}</td>'
            f'<td class="num">{ms(d["latency"]["v1"])}</td>'
            f'<td class="num">{ms(d["latency"]["v2"])}</td></tr>')
    return ('<table class="t divs"><thead><tr><th>round</th>'
            + ("<th>shard</th>" if shards else "") + "<th>time</th><th>category</th>"
            "<th>prompt</th><th>bucket</th><th>verdict</th><th>re-fire</th>"
            '<th class="num">shared chars</th><th class="num">v1</th><th class="num">v2</th>'
            "</tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _select(name: str, options: list[str], current: str | None) -> str:
    opts = ['<option value="">any</option>'] + [
        f'<option value="{esc(o)}"{" selected" if o == current else ""}>{esc(o)}</option>'
        for o in options]
    return f'<label>{esc(name)} <select name="{esc(name)}">{"".join(opts)}</select></label>'


def divergences(data: Mapping[str, Any], query: Mapping[str, str]) -> str:
    f = data["filters"]
    shard = query.get("shard", "")
    form = ('<form class="filters" method="get" action="/divergences">' +
            (f'<input type="hidden" name="shard" value="{esc(shard)}">' if shard else "") +
            _select("bucket", data["buckets"], f["bucket"]) +
            _select("verdict", data["verdicts"], f["verdict"]) +
            _select("category", data["categories"], f["category"]) +
            f'<label>since <input name="since" value="{esc(query.get("since", ""))}" '
            'placeholder="2026-11-27T00:00:00Z"></label>'
            f'<label>until <input name="until" value="{esc(query.get("until", ""))}"></label>'
            '<button type="submit">filter</button></form>')
    head = (f'<p class="count"><span data-figure="divergences-total">{data["total"]:,}</span> '
            f"matching round(s), the first {data['shown']:,} shown.</p>")
    def link(d: dict[str, Any]) -> str:
        where = d.get("shard") or shard
        return f"/round/{d['round']}" + (f"?{query_string({'shard': where})}" if where else "")

    return form + head + divergence_rows(data["items"], link)


def _marked(text: str, cut: int | None) -> str:
    if cut is None:
        return esc(visible(text))
    if cut >= len(text):
        return esc(visible(text)) + '<mark class="div end">⟦end⟧</mark>'
    return (esc(visible(text[:cut])) + '<mark class="div">' + esc(visible(text[cut])) +
            "</mark>" + f'<span class="after">{esc(visible(text[cut + 1:]))}</span>')


def round_detail(r: Mapping[str, Any]) -> str:
    """Both replies side by side: the exact text, then invisible characters shown and the
    first divergent character marked; then the forensics."""
    div = r.get("divergence_byte")
    out = [f'<section class="round b-{esc(r.get("bucket"))}">'
           f'<h2>Round {esc(r.get("round"))} <span class="pill"><span class="dot"></span>'
           f'{esc(r.get("bucket"))}</span></h2><dl class="kv">'
           f'<dt>time</dt><dd class="mono">{esc(r.get("ts"))}</dd>'
           f'<dt>prompt</dt><dd class="mono">{esc(r.get("prompt_id"))} '
           f'({esc(r.get("category"))})</dd>']
    if div is not None:
        out.append(f"<dt>first divergence</dt><dd>byte {esc(div)}, after "
                   f"{esc(r.get('prefix_match_chars'))} shared characters</dd>")
    out.append('</dl><div class="sides">')
    for side in SIDES:
        reply = r.get(side) or {}
        text = reply.get("text")
        meta = (f"status {num(reply.get('status'))} · latency {ms(reply.get('latency_ms'))} · "
                f"ttft {ms(reply.get('ttft_ms'))} · finish {reply.get('finish_reason') or '—'}"
                f" · {num(reply.get('completion_tokens'))} tokens")
        out.append(f'<div class="side" data-side="{side}"><h3>{side}</h3>'
                   f'<p class="meta">{esc(meta)}</p>')
        if reply.get("error"):
            out.append(f'<p class="error">error: {esc(reply["error"])}</p>')
        if text is not None:
            cut = char_offset(text, div) if isinstance(div, int) else None
            out.append(f'<h4>as sent</h4><pre class="text" data-text="{side}">{esc(text)}'
                       "</pre>")
            out.append(f'<h4>invisible characters shown</h4><pre class="vis">'
                       f"{_marked(text, cut)}</pre>")
        out.append("</div>")
    out.append("</div>")
    fx, refire = r.get("forensics"), r.get("refire")
    if fx or refire:
        out.append('<h2>Forensics</h2><div class="grid2">')
        for title, obj in (("token verdict", fx), ("re-fire", refire)):
            if not isinstance(obj, dict):
                continue
            rows = "".join(f"<dt>{esc(k)}</dt><dd>{esc(num(v))}</dd>" for k, v in obj.items()
                           if not isinstance(v, (dict, list)))
            nested = {k: v for k, v in obj.items() if isinstance(v, (dict, list))
                      and k != "tokens"}
            block = f"<pre class='json'>{esc(_json(nested))}</pre>" if nested else ""
            out.append(f'<div><h3>{esc(title)}</h3><dl class="kv">{rows}</dl>{block}</div>')
        out.append("</div>")
        if isinstance(fx, dict) and isinstance(fx.get("tokens"), dict):
            out.append(token_tables(fx["tokens"], fx.get("divergence_token")))
    aa = r.get("aa")
    if isinstance(aa, dict):
        out.append(f"<h2>A/A</h2><pre class='json'>{esc(_json(aa))}</pre>")
    out.append("</section>")
    return "".join(out)


def _json(obj: Any) -> str:
    return escape_json(obj, indent=True).decode("utf-8", "replace")


def token_tables(tokens: Mapping[str, Any], at: Any) -> str:
    """Each side's tokens around the first differing one, with its top-K alternatives."""
    out = ['<h3>Tokens around the divergence (logprob, top-K)</h3><div class="sides">']
    for side in SIDES:
        rows = []
        for t in tokens.get(side) or []:
            if not isinstance(t, dict):
                continue
            top: list[Any] = t["top"] if isinstance(t.get("top"), list) else []
            alts = " ".join(
                f'<span class="alt"><code>{esc(visible(str(a[0]), spaces=True))}</code> '
                f'{esc(num(a[1]))}</span>' for a in top
                if isinstance(a, list) and len(a) == 2)
            here = ' class="at"' if t.get("i") == at else ""
            rows.append(f"<tr{here}><td class='num'>{esc(t.get('i'))}</td>"
                        f"<td><code>{esc(visible(str(t.get('t', '')), spaces=True))}</code>"
                        f"</td><td class='num'>{esc(num(t.get('lp')))}</td><td>{alts}</td></tr>")
        out.append(f'<div class="side" data-tokens="{side}"><h3>{side}</h3>'
                   "<table class='t tokens'><thead><tr><th class='num'>#</th><th>token</th>"
                   "<th class='num'>logprob</th><th>top-K</th></tr></thead><tbody>" +
                   "".join(rows) + "</tbody></table></div>")
    out.append("</div>")
    return "".join(out)


def worst_prompts(items: list[dict[str, Any]]) -> str:
    def share(p: dict[str, Any]) -> str:
        return pct(p["divergent"] / p["parity_rounds"] if p["parity_rounds"] else None, 1)

    rows = "".join(
        f"<tr><td class='mono'>{esc(p['prompt_id'])}</td><td>{esc(p['category'])}</td>"
        f"<td class='num'>{p['divergent']:,}</td><td class='num'>{p['parity_rounds']:,}</td>"
        f"<td class='num'>{share(p)}</td></tr>" for p in items)
    return ("<table class='t'><thead><tr><th>prompt</th><th>category</th>"
            "<th class='num'>divergent</th><th class='num'>parity rounds</th>"
            "<th class='num'>share</th></tr></thead><tbody>" + rows + "</tbody></table>")


def nav(current: str, prefix: str = "", shard: str | None = None) -> str:
    """The page links (``shard``: kept on each link, the shard's own pages)."""
    items = [("overview", "/"), ("plots", "/plots"), ("divergences", "/divergences")]
    tail = esc(f"?{query_string({'shard': shard})}") if shard else ""
    return "".join(f'<a class="{"on" if name == current else ""}" href="{prefix}{href}{tail}">'
                   f"{name}</a>" for name, href in items)


def query_string(q: Mapping[str, str]) -> str:
    return urlencode({k: v for k, v in q.items() if v})
