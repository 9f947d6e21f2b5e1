"""Gate table, drift and PPL figures as rich renderables; the halt alert panel."""

from __future__ import annotations

import shlex
from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from shadow_burnin.core.drift import Drift
from shadow_burnin.core.gates import (
    FAIL,
    METRICS,
    PASS,
    SYMBOL,
    GateReport,
    GateResult,
    format_value,
)
from shadow_burnin.core.timefmt import human as when
from shadow_burnin.render.escape import term
from shadow_burnin.render.text import data, fmt_ms, signed

STATE_STYLE = {PASS: "bold green", FAIL: "bold red", "waiting": "bold yellow"}
VERDICT_TEXT = {PASS: "GO: every gate is green", FAIL: "NO-GO: a gate is red",
                "waiting": "WAITING: no gate is red, some need more rounds or time"}


def target_text(r: GateResult) -> str:
    s = r.spec
    if s.comparator == "within":
        base = "v1's PPL" if s.baseline is None else f"{s.baseline:g}"
        return f"within ±{s.target:g} of {base}"
    if s.metric == "active_halt" and s.comparator == "==" and s.target == 0:
        return "no active halt"
    op = {">=": "≥", "<=": "≤", "!=": "≠"}.get(s.comparator, s.comparator)
    shown = format_value(s.metric, s.target)
    if METRICS.get(s.metric, ("",))[0] == "ms":
        shown = shown.lstrip("+")
    return f"{op} {shown}"


def current_text(r: GateResult) -> str:
    f = r.figure
    text = format_value(r.spec.metric, f.value)
    if r.spec.comparator == "within" and f.value is not None and r.baseline is not None:
        text += f" (baseline {r.baseline:.4f}, Δ {f.value - r.baseline:+.4f})"
    if f.interval is not None:
        lo, hi = (format_value(r.spec.metric, v) for v in f.interval)
        text += f" [95 % {lo} – {hi}]"
    if f.note and r.spec.metric == "active_halt":
        text += f": {f.note}"
    return text


def behind_text(r: GateResult) -> str:
    metric = r.spec.metric
    if metric == "active_halt":
        return f"{r.figure.samples} halt(s) logged"
    what = "tokens" if metric.startswith(("ppl", "kld", "same_top1", "rms_dp",
                                          "mean_nll")) else "rounds"
    return f"{r.figure.samples:,} {what}"


def gates_table(report: GateReport) -> RenderableType:
    """``gate | target | current | state`` plus what stands behind each figure."""
    table = Table(title="cutover gates" + (" (statistical)" if report.statistical else ""),
                  title_justify="left")
    for col in ("gate", "target", "current", "state", "behind", "as of"):
        table.add_column(col, justify="right" if col == "behind" else "left")
    for r in report.results:
        table.add_row(data(r.spec.name), data(target_text(r)), data(current_text(r)),
                      Text(f"{SYMBOL[r.state]} {r.state}", style=STATE_STYLE[r.state]),
                      data(behind_text(r)), when(r.figure.as_of))
    verdict = Text(VERDICT_TEXT[report.verdict], style=STATE_STYLE[report.verdict])
    parts: list[RenderableType] = [table, verdict]
    for r in report.results:
        if r.state != PASS:
            parts.append(data(f"  {SYMBOL[r.state]} {r.spec.name}: {r.reason}", style="dim"))
    for note in report.notes:
        parts.append(data(f"note: {note}", style="yellow"))
    return Group(*parts)


def drift_section(d: Drift) -> RenderableType:
    head = Table(title="latency drift", title_justify="left", show_header=False, box=None,
                 padding=(0, 2))
    if d.v2_first_p95 is not None:
        ratio = f" (×{d.v2_p95_drift_ratio:.2f})" if d.v2_p95_drift_ratio else ""
        head.add_row(f"v2 p95, first → last {d.n}",
                     f"{fmt_ms(d.v2_first_p95)} → {fmt_ms(d.v2_last_p95)}{ratio}")
    if d.relative_drift_ms is not None:
        verdict = Text("v2 slows down relative to v1", style="bold red") if d.slowing \
            else Text("no relative slow-down", style="green")
        head.add_row(f"gap v2 − v1 p95, first → last {d.n}",
                     f"{signed(d.gap_first_p95 or 0.0)} → {signed(d.gap_last_p95 or 0.0)} ms "
                     f"(drift {signed(d.relative_drift_ms)} ms)")
        head.add_row("trend of v2 − v1", Text.assemble(
            f"{d.slope_ms_per_1k:+.2f} ± {d.slope_se:.2f} ms per 1 000 completions  ",
            verdict))
    if d.note:
        head.add_row("note", data(d.note))
    parts: list[RenderableType] = [head]
    if len(d.hourly) > 1:
        hours = Table(title="p95 per hour", title_justify="left")
        for col in ("hour (UTC)", "rounds", "v1 p95", "v2 p95"):
            hours.add_column(col, justify="left" if col.startswith("hour") else "right")
        for h in d.hourly[-48:]:
            hours.add_row(when(h.hour)[:-4] + "Z", f"{h.rounds:,}", fmt_ms(h.v1), fmt_ms(h.v2))
        parts.append(hours)
    return Group(*parts)


def ack_command(log: str | None) -> str:
    """The ``ack-halt`` command line for this log, quoted for a POSIX shell."""
    where = f" --log {shlex.quote(str(log))}" if log else ""
    return f"shadow-burnin ack-halt{where} --reason \"…\""


def halt_alert(message: str, log: str | None = None) -> RenderableType:
    """The loud alert ``run`` prints when it raises a halt; it names the log in use so the
    suggested ``ack-halt`` command acknowledges the right one."""
    body = Text(term(message) + "\n\nGates stay red until: " + term(ack_command(log)))
    return Panel(body, title="⛔ NO-MATCH HALT", border_style="bold red", style="bold")


def ppl_section(record: dict[str, Any]) -> RenderableType:
    """A ``ppl`` run: both sides, then the paired comparison."""
    table = Table(title=f"perplexity ({record['window']}-token windows × {record['windows']}, "
                        f"top-{record['top_k']})", title_justify="left")
    for col in ("side", "method", "PPL", "mean NLL", "tokens", "seconds", "requests"):
        table.add_column(col, justify="left" if col in ("side", "method") else "right")
    for side in ("v1", "v2"):
        s = record.get(side)
        if not s:
            continue
        table.add_row(side, data(s["method"]), _num(s.get("ppl"), 4),
                      _num(s.get("mean_nll"), 5),
                      f"{s['tokens']:,}", f"{s['seconds']:.1f}", str(s["requests"]))
    parts: list[RenderableType] = [table]
    p = record.get("paired")
    if record.get("ppl_delta") is not None:
        parts.append(Text(f"  ΔPPL (v2 − v1)          {record['ppl_delta']:+.4f}"))
    if p:
        rows = Table(show_header=False, box=None, padding=(0, 2))
        rows.add_row("Δ mean NLL (v2 − v1)",
                     f"{_num(p['nll_diff_mean'], 5)} ± {_num(p['nll_diff_se'], 5)} (SE)")
        rows.add_row("mean KL(v1‖v2)", f"{_num(p['kld_mean'], 6)} ± {_num(p['kld_se'], 6)}  "
                     f"(p99 {_num(p['kld_p99'], 5)}, max {_num(p['kld_max'], 5)})")
        rate, se = p.get("same_top1_rate"), p.get("same_top1_se")
        rows.add_row("same top-1", "—" if rate is None else
                     f"{100 * rate:.2f} % ± {100 * (se or 0):.2f} %")
        rows.add_row("RMS Δp", "—" if p["rms_dp"] is None else f"{100 * p['rms_dp']:.3f} %")
        rows.add_row("paired positions", f"{p['positions']:,}"
                     + (f" ({p['mismatched']} left out)" if p["mismatched"] else ""))
        parts.append(rows)
    for note in record.get("notes", []):
        parts.append(data(f"note: {note}", style="yellow"))
    return Group(*parts)


def _num(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"
