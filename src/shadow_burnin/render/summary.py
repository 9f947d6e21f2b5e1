"""Text output of ``bench``, ``recent`` and ``show``: functions returning rich renderables."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from shadow_burnin.core.compare import classify
from shadow_burnin.core.records import BUCKETS, SIDES
from shadow_burnin.core.stats import Summary
from shadow_burnin.core.timefmt import human as _when
from shadow_burnin.render.divergences import forensics_tables
from shadow_burnin.render.escape import term
from shadow_burnin.render.text import (
    GLYPH,
    STYLE,
    char_offset,
    data,
    fmt_ms,
    fmt_pct,
    plural,
    signed,
    visible,
)

# Every string read from the log (prompt ids, categories, timestamps, errors, notes) goes
# into a table as ``data(...)``: a Text with control characters shown, never markup.


def bench_table(s: Summary) -> RenderableType:
    """The human summary of a log."""
    head = Table(title="shadow-burnin bench", show_header=False, box=None, padding=(0, 2))
    head.add_row("rounds", f"{s.rounds:,}  ({_when(s.first_ts)} → {_when(s.last_ts)})")
    ci = s.exact_match_ci95
    ci_text = f"  (95% CI {fmt_pct(ci[0], 2)} – {fmt_pct(ci[1], 2)})" if ci else ""
    head.add_row("exact match", f"{fmt_pct(s.exact_match_rate, 2)} of {s.parity_rounds:,} "
                 f"parity rounds{ci_text}")
    head.add_row("unreachable", f"v1 {fmt_pct(s.unreachable_rate['v1'], 2)}   "
                 f"v2 {fmt_pct(s.unreachable_rate['v2'], 2)}")
    gap = "—" if s.p95_gap_ms is None else f"{signed(s.p95_gap_ms)} ms (positive: v2 slower)"
    head.add_row("p95 gap", gap)
    mp = s.median_prefix_match_chars
    head.add_row("median prefix match", "—" if mp is None else f"{mp:,.0f} chars (non-exact)")

    counts = Table(title="buckets", title_justify="left")
    for col in ("", "bucket", "rounds", "share"):
        counts.add_column(col, justify="right" if col in ("rounds", "share") else "left")
    for b in BUCKETS:
        share = s.counts[b] / s.rounds if s.rounds else None
        counts.add_row(Text(GLYPH[b], style=STYLE[b]), Text(b, style=STYLE[b]),
                       f"{s.counts[b]:,}", fmt_pct(share))

    lat = Table(title="latency", title_justify="left")
    lat.add_column("")
    for q in ("p50", "p95", "p99"):
        lat.add_column(f"latency {q}", justify="right")
    for q in ("p50", "p95"):
        lat.add_column(f"ttft {q}", justify="right")
    for side in SIDES:
        lt, tt = s.latency_ms[side] or {}, s.ttft_ms[side] or {}
        lat.add_row(side, *(fmt_ms(lt.get(q)) for q in ("p50", "p95", "p99")),
                    *(fmt_ms(tt.get(q)) for q in ("p50", "p95")))

    cats = Table(title="by category", title_justify="left")
    for col in ("category", "rounds", "exact", "prefix-only", "no-match", "unreachable",
                "exact %"):
        cats.add_column(col, justify="left" if col == "category" else "right")
    for name, row in s.by_category.items():
        c = row["counts"]
        unreach = c["v1-unreachable"] + c["v2-unreachable"] + c["both-unreachable"]
        cats.add_row(data(name), str(row["rounds"]), str(c["exact"]), str(c["prefix-only"]),
                     str(c["no-match"]), str(unreach), fmt_pct(row["exact_match_rate"]))
    parts: list[RenderableType] = [head, counts, lat, cats]
    if any(s.unreachable_errors.values()):
        parts.append(unreachable_errors_table(s.unreachable_errors))
    fx = s.forensics
    if s.top_divergent_prompts:
        parts.append(top_prompts_table(s.top_divergent_prompts,
                                       (fx or {}).get("top_prompts") or []))
    if fx and (fx["no_match"]["rounds"] or fx["prefix_only"]["rounds"] or
               (s.aa or {}).get("records")):
        parts.extend(forensics_tables(fx, s.aa))
    rv = (fx or {}).get("run_verdict")
    if rv:
        style = {"noise": "green", "changed": "red"}.get(rv["decision"], "yellow")
        parts.append(data(f"run-level verdict: {rv['decision']} — {rv['explanation']}",
                          style=style))
    for note in s.notes:
        parts.append(data(f"note: {note}", style="yellow"))
    return Group(*parts)


def unreachable_errors_table(errors: dict[str, dict[str, int]]) -> RenderableType:
    """Each side's unreachable rounds by error code (codes come from the log: data)."""
    table = Table(title="unreachable rounds by error code", title_justify="left")
    for col in ("side", "error code", "rounds"):
        table.add_column(col, justify="right" if col == "rounds" else "left")
    for side, codes in errors.items():
        for code, n in codes.items():
            table.add_row(side, data(code), f"{n:,}")
    return table


VERDICT_COLUMNS = ("near-tie", "regression", "unexplained", "flaky")


def top_prompts_table(top: list[dict[str, Any]],
                      forensics: list[dict[str, Any]]) -> RenderableType:
    """The one "top divergent prompts" table: divergent / parity rounds per prompt, with
    the forensics verdict counts beside them when the rounds carry forensics."""
    by_id = {str(p.get("prompt_id")): p for p in forensics}
    table = Table(title="top divergent prompts", title_justify="left")
    cols = ["prompt", "category", "divergent", "parity rounds"]
    if by_id:
        cols += list(VERDICT_COLUMNS)
    for col in cols:
        table.add_column(col, justify="left" if col in ("prompt", "category") else "right")
    for row in top:
        cells: list[Any] = [data(row["prompt_id"]), data(row["category"]),
                            str(row["divergent"]), str(row["parity_rounds"])]
        if by_id:
            fx = by_id.get(str(row["prompt_id"]), {})
            cells += [str(fx.get(c, "—")) for c in VERDICT_COLUMNS]
        table.add_row(*cells)
    return table


def recent_table(records: list[dict[str, Any]]) -> RenderableType:
    table = Table(title=f"last {plural(len(records), 'round')}", title_justify="left")
    for col in ("round", "ts", "", "bucket", "prompt", "div. byte", "v1", "v2"):
        table.add_column(col, justify="right" if col in ("round", "div. byte") else "left")
    for r in records:
        b = r["bucket"]
        table.add_row(
            data(r["round"]), data(r["ts"]), Text(GLYPH[b], style=STYLE[b]),
            Text(b, style=STYLE[b]), data(r["prompt_id"]),
            "—" if r.get("divergence_byte") is None else data(r["divergence_byte"]),
            _side_cell(r["v1"]), _side_cell(r["v2"]),
        )
    private = sum(1 for r in records if is_private(r))
    if not private:
        return table
    return Group(table, Text(f"{plural(private, 'round')} logged without texts (`show ROUND` "
                             "shows what was kept): " + KEEP_TEXT_HINT, style="yellow"))


def _side_cell(reply: dict[str, Any]) -> Text:
    if reply.get("error"):
        return data(str(reply["error"])[:40])
    return Text(fmt_ms(reply.get("latency_ms")))


def _or_dash(value: Any) -> str:
    return "—" if value is None else term(value)


KEEP_TEXT_HINT = ("the mirror keeps only a SHA-256 and the length of the prompt and of each "
                  "reply, and ±40 characters around the first divergence, unless it runs "
                  "with --keep-text ([mirror] keep_text = true)")


def is_private(r: dict[str, Any]) -> bool:
    """A round logged without its texts (the mirror's default): a side whose text is
    null while its hash is there."""
    return any(isinstance(r.get(side), dict) and r[side].get("text") is None
               and r[side].get("text_sha256") is not None for side in SIDES)


def show_round(r: dict[str, Any]) -> RenderableType:
    """Both replies in full; the first divergence marked; invisible characters shown.
    A private round (texts not kept) shows what is there: hashes, lengths and the
    divergence context, and says how to keep the texts."""
    b = r["bucket"]
    head = Text.assemble(
        (f"round {term(r['round'])}", "bold"), f"  {term(r['ts'])}  prompt "
        f"{term(r['prompt_id'])} ", (f"({term(r['category'])})  ", "dim"),
        (term(b), STYLE.get(b, "")),
    )
    parts: list[RenderableType] = [head]
    private = is_private(r)
    if r.get("source") == "mirror":
        parts.append(_mirror_line(r))
    if r.get("divergence_byte") is not None:
        parts.append(Text(f"first divergence at byte {term(r['divergence_byte'])}, after "
                          f"{term(r.get('prefix_match_chars'))} shared characters",
                          style="yellow"))
    if private:
        parts.append(Text("texts not kept: " + KEEP_TEXT_HINT, style="yellow"))
        if r.get("prompt_sha256") is not None:
            parts.append(data(f"prompt  {_or_dash(r.get('prompt_chars'))} characters  "
                              f"sha256 {r['prompt_sha256']}"))
    v1t, v2t = _side(r, "v1").get("text"), _side(r, "v2").get("text")
    cmp = classify(v1t if isinstance(v1t, str) and not _side(r, "v1").get("error") else None,
                   v2t if isinstance(v2t, str) and not _side(r, "v2").get("error") else None)
    context = _context(r)
    for side in SIDES:
        reply = _side(r, side)
        meta = (f"status {_or_dash(reply.get('status'))}  latency "
                f"{fmt_ms(_num(reply.get('latency_ms')))}  "
                f"ttft {fmt_ms(_num(reply.get('ttft_ms')))}  "
                f"finish {_or_dash(reply.get('finish_reason'))}  "
                f"tokens {_or_dash(reply.get('completion_tokens'))}")
        parts.append(Text(f"── {side} ── {meta}", style="bold cyan"))
        if reply.get("error"):
            parts.append(data(f"error: {reply['error']}", style="red"))
        text = reply.get("text")
        if isinstance(text, str):
            parts.append(marked(text, cmp.divergence_byte))
            continue
        if reply.get("text_sha256") is not None:
            parts.append(data(f"text not kept: {_or_dash(reply.get('text_chars'))} "
                              f"characters  sha256 {reply['text_sha256']}", style="dim"))
        if context is not None:
            at, shared, v1_excerpt, v2_excerpt = context
            excerpt = v1_excerpt if side == "v1" else v2_excerpt
            cut = None if shared is None else shared - at
            chars = reply.get("text_chars")
            more = isinstance(chars, int) and at + len(excerpt) < chars
            line = Text(f"…[{at}] " if at else "", style="dim")
            line.append_text(marked_at(excerpt, cut))
            if more:
                line.append(" …", style="dim")
            parts.append(line)
    if private and context is None and b in ("prefix-only", "no-match"):
        parts.append(Text("no divergence context in this round", style="dim"))
    if private and b == "exact":
        parts.append(Text("both replies have the same SHA-256: identical", style="green"))
    return Group(*parts)


def _side(r: dict[str, Any], side: str) -> dict[str, Any]:
    reply = r.get(side)
    return reply if isinstance(reply, dict) else {}


def _num(value: Any) -> float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _mirror_line(r: dict[str, Any]) -> Text:
    found = r.get("mirror")
    meta: dict[str, Any] = found if isinstance(found, dict) else {}
    bits = [f"mirrored request {_or_dash(meta.get('path'))}",
            "streamed" if meta.get("stream") is True else "not streamed"]
    if meta.get("reason") is not None:
        bits.append(f"not comparable: {term(meta['reason'])}")
    if meta.get("forced_greedy"):
        bits.append("forced greedy (v1's reply is a shadow-only greedy copy)")
    if meta.get("client_cancelled"):
        bits.append("the client left before v1's reply was complete")
    return Text("  ".join(bits), style="dim")


def _context(r: dict[str, Any]) -> tuple[int, int | None, str, str] | None:
    """(first character index, shared characters, v1 excerpt, v2 excerpt) of a private
    round's divergence context; None when absent or malformed."""
    ctx = r.get("context")
    if not isinstance(ctx, dict):
        return None
    at, v1, v2 = ctx.get("at"), ctx.get("v1"), ctx.get("v2")
    if not (isinstance(at, int) and not isinstance(at, bool) and at >= 0
            and isinstance(v1, str) and isinstance(v2, str)):
        return None
    shared = r.get("prefix_match_chars")
    if not (isinstance(shared, int) and not isinstance(shared, bool) and shared >= at):
        shared = None
    return at, shared, v1, v2


def marked(text: str, divergence_byte: int | None) -> Text:
    """The text with invisible characters shown and the first differing character marked."""
    if divergence_byte is None:
        return Text(visible(text))
    return marked_at(text, char_offset(text, divergence_byte))


def marked_at(text: str, cut: int | None) -> Text:
    """``marked`` at a character index (None: nothing marked)."""
    if cut is None:
        return Text(visible(text))
    out = Text(visible(text[:cut]))
    if cut < len(text):
        out.append("⟦", style="bold red")
        out.append(visible(text[cut]), style="bold white on red")
        out.append("⟧", style="bold red")
        out.append(visible(text[cut + 1:]), style="dim")
    else:
        out.append("⟦end⟧", style="bold red")
    return out
