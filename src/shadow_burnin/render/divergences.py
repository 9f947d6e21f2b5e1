"""``divergences`` output and the forensics part of ``bench``: rows, tables, alignment."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from shadow_burnin.core.aa import TOO_FEW
from shadow_burnin.render.text import STYLE, data, fmt_pct, plural, visible

CONTEXT = 40
VERDICT_STYLE = {"near-tie": "green", "regression": "bold red", "unexplained": "yellow",
                 "length": "cyan", "stop": "cyan"}


def _common_chars(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def aligned(v1: str, v2: str, width: int = CONTEXT) -> dict[str, Any]:
    """Both texts cut at their first differing character, ``width`` characters each side:
    ``before`` (shared), ``v1``/``v2`` (from the differing character on), ``at``
    (its character index) and whether text was cut off on the left/right."""
    cut = _common_chars(v1, v2)
    start = max(0, cut - width)
    return {"at": cut, "before": v1[start:cut], "v1": v1[cut:cut + width],
            "v2": v2[cut:cut + width], "cut_left": start > 0,
            "cut_right": {"v1": len(v1) > cut + width, "v2": len(v2) > cut + width}}


def row(record: dict[str, Any], width: int = CONTEXT) -> dict[str, Any]:
    """One non-exact round as a ``divergences`` row (also its ``--json`` form)."""
    fx = record.get("forensics") or {}
    refire = record.get("refire") or {}
    t1 = record["v1"].get("text") or ""
    t2 = record["v2"].get("text") or ""
    return {
        "round": record["round"], "ts": record["ts"], "prompt_id": record["prompt_id"],
        "category": record["category"], "bucket": record["bucket"],
        "divergence_token": fx.get("divergence_token"),
        "verdict": fx.get("verdict") or fx.get("cause"),
        "reason": fx.get("reason"), "swing": fx.get("swing"), "swing_min": fx.get("swing_min"),
        "prefix_drift": fx.get("prefix_drift"), "refire": refire.get("outcome"),
        "divergence_byte": record.get("divergence_byte"),
        "context": _private(record, width) or aligned(t1, t2, width),
    }


def _private(record: dict[str, Any], width: int) -> dict[str, Any] | None:
    """A mirror round logged without its texts: aligned from the ±40 characters it
    kept (``context``), placed at their offset; None for any other round."""
    ctx = record.get("context")
    if not isinstance(ctx, dict) or record["v1"].get("text") is not None or \
            record["v2"].get("text") is not None:
        return None
    at = ctx.get("at")
    offset = at if isinstance(at, int) else 0
    out = aligned(str(ctx.get("v1") or ""), str(ctx.get("v2") or ""), width)
    out["cut_left"] = out["cut_left"] or offset > 0
    out["at"] += offset
    for side in ("v1", "v2"):
        chars = record[side].get("text_chars")
        out["cut_right"][side] = isinstance(chars, int) and chars > out["at"] + width
    return out


def _one_line(text: str) -> str:
    return visible(text, spaces=False).replace("\n", "")


def context_text(ctx: dict[str, Any], side: str) -> Text:
    """``…shared⟦x⟧rest…`` for one side, the first differing character highlighted."""
    out = Text(f"{side} ", style="bold cyan")
    out.append(("…" if ctx["cut_left"] else "") + _one_line(ctx["before"]))
    rest = ctx[side]
    if rest:
        out.append("⟦", style="bold red")
        out.append(_one_line(rest[0]), style="bold white on red")
        out.append("⟧", style="bold red")
        out.append(_one_line(rest[1:]), style="dim")
    else:
        out.append("⟦end⟧", style="bold red")
    if ctx["cut_right"][side]:
        out.append("…", style="dim")
    return out


def _swing(r: dict[str, Any]) -> str:
    swing, low = r.get("swing"), r.get("swing_min")
    if isinstance(swing, int | float) and not isinstance(swing, bool):
        return f"{swing:.3f}"
    if isinstance(low, int | float) and not isinstance(low, bool):
        return f"≥{low:.2f}"
    return "—"


def divergences_table(rows: list[dict[str, Any]]) -> RenderableType:
    table = Table(title=f"{plural(len(rows), 'non-exact round')}", title_justify="left")
    shards = any("shard" in r for r in rows)  # several logs: the shard of each row
    if shards:
        table.add_column("shard", no_wrap=True)
    for col in ("round", "prompt", "category", "tok", "verdict", "swing", "re-fire",
                "texts at the first difference"):
        table.add_column(col, justify="right" if col in ("round", "tok", "swing") else "left",
                         no_wrap=col != "texts at the first difference")
    for r in rows:
        verdict = r["verdict"] or "—"
        label = data(verdict, style=VERDICT_STYLE.get(str(verdict), ""))
        if r["bucket"] == "prefix-only":
            label = Text.assemble(("prefix ", STYLE["prefix-only"]), label)
        tok = "—" if r["divergence_token"] is None else str(r["divergence_token"])
        texts = Text("\n").join([context_text(r["context"], "v1"),
                                 context_text(r["context"], "v2")])
        table.add_row(*([data(r.get("shard", ""))] if shards else []),
                      data(r["round"]), data(r["prompt_id"]), data(r["category"]), data(tok),
                      label, _swing(r), data(r["refire"] or "—"), texts)
    return table


def forensics_tables(fx: dict[str, Any], aa: dict[str, Any] | None) -> list[RenderableType]:
    """bench's forensics section: verdicts, causes, re-fires, positions, A/A."""
    parts: list[RenderableType] = []
    nm, po, rf = fx["no_match"], fx["prefix_only"], fx["refire"]
    head = Table(title="divergence forensics", show_header=False, box=None, padding=(0, 2))
    head.add_row(f"no-match rounds ({nm['rounds']:,})", _counts(nm["verdicts"], nm["rounds"]))
    head.add_row(f"prefix-only rounds ({po['rounds']:,})", _counts(po["causes"], po["rounds"]))
    head.add_row(f"re-fired ({rf['rounds']:,})", _counts(rf["outcomes"], rf["rounds"]))
    parts.append(head)
    hist = fx["divergence_token_histogram"]
    if any(b["rounds"] for b in hist):
        ht = Table(title="first differing token (no-match)", title_justify="left")
        ht.add_column("token")
        ht.add_column("rounds", justify="right")
        ht.add_column("")
        peak = max(b["rounds"] for b in hist)
        for b in hist:
            bar = "█" * max(1 if b["rounds"] else 0, round(30 * b["rounds"] / peak))
            ht.add_row(b["range"], str(b["rounds"]), bar)
        parts.append(ht)
    # the per-prompt verdict counts (fx["top_prompts"]) are part of bench's one
    # "top divergent prompts" table (render.summary.top_prompts_table)
    if aa and aa.get("records"):
        parts.append(_aa_table(aa))
    return parts


def _counts(counts: dict[str, int], total: int) -> str:
    shown = [f"{name} {n:,} ({fmt_pct(n / total if total else None)})"
             for name, n in counts.items() if n]
    return "   ".join(shown) if shown else "—"


def _aa_table(aa: dict[str, Any]) -> RenderableType:
    t = Table(title="A/A noise floor (v1 against itself)", show_header=False, box=None,
              padding=(0, 2))
    ci = aa.get("aa_exact_ci95")
    ci_text = f"  (95% CI {fmt_pct(ci[0], 2)} – {fmt_pct(ci[1], 2)})" if ci else ""
    t.add_row("A/A exact", f"{fmt_pct(aa['aa_exact_rate'], 2)} of {aa['parity']:,} "
              f"A/A pairs{ci_text}")
    t.add_row("A/B exact", fmt_pct(aa["ab_exact_rate"], 2))
    d, dci, verdict = aa.get("ab_minus_aa"), aa.get("ab_minus_aa_ci95"), aa.get("verdict")
    if verdict is not None and verdict.startswith(TOO_FEW):
        t.add_row("A/B − A/A", verdict)  # no figure: it would read as a verdict
    elif d is not None and dci:
        t.add_row("A/B − A/A", f"{100 * d:+.2f} pts (95% CI {100 * dci[0]:+.2f} – "
                  f"{100 * dci[1]:+.2f}): {verdict}")
    if aa.get("swing_p99") is not None:
        t.add_row("A/A swing p99", f"{aa['swing_p99']:.3f} nats "
                  f"({aa.get('flips', 0):,} flips, {aa.get('noise_tokens', 0):,} matched tokens)")
    if aa.get("drift_p99") is not None:
        t.add_row("A/A drift p99", f"{aa['drift_p99']:.3f} nats")
    return Group(t)
