"""``preflight`` on a terminal: one row per check, the fix under each failed one."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from shadow_burnin.app.preflight import Preflight
from shadow_burnin.render.escape import term

MARK = {"ok": ("✓", "green"), "mismatch": ("✗", "red"), "warn": ("!", "yellow"),
        "skipped": ("–", "dim")}


def preflight_view(result: Preflight) -> RenderableType:
    """A table of findings and a one-line verdict; every server string escaped once."""
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("", no_wrap=True)
    table.add_column("check", no_wrap=True)
    table.add_column("finding")
    for f in result.findings:
        mark, style = MARK[f.status]
        detail = Text(term(f.detail))
        if f.fix and f.status != "ok":
            detail.append("\n→ " + term(f.fix), style="bold")
        table.add_row(Text(mark, style=style), Text(term(f.check)), detail)
    fatal = [f.check for f in result.findings if f.fatal]
    verdict = (Text("preflight: OK — a byte-for-byte burn-in of this pair is meaningful",
                    style="green") if result.ok else
               Text("preflight: FAILED — fix " + ", ".join(term(c) for c in fatal)
                    + " before a burn-in (byte comparison would be meaningless)", style="red"))
    return Group(table, verdict)
