"""``cutover`` / ``rollback`` output for a terminal: the result, its checks, the diffs, and a
loud panel when Caddy's state is unknown. Every string from data (Caddy's config and
errors, the log, flags) goes through :mod:`shadow_burnin.render.escape` once, here."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.text import Text

from shadow_burnin.core.flip import FlipStatus, flip_line
from shadow_burnin.render import escape

CODE_STYLE = {0: "bold green", 1: "bold red", 2: "bold red", 3: "bold yellow", 4: "bold red",
              5: "bold red"}


def progress_line(message: str) -> Text:
    return Text("· " + escape.term(message), style="dim")


def diff_text(diff: str) -> Text:
    out = Text()
    for line in escape.term(diff).splitlines(keepends=True):
        style = "green" if line.startswith("+") and not line.startswith("+++") else \
            "red" if line.startswith("-") and not line.startswith("---") else ""
        out.append(line, style=style)
    return out


def result_view(result: Any) -> RenderableType:
    """``app.cutover.Result`` → what the terminal shows after the gate table."""
    parts: list[RenderableType] = []
    if result.diff:
        parts.append(Text("change to Caddy's live config:", style="bold"))
        parts.append(diff_text(result.diff))
    if result.caddyfile_diff:
        parts.append(Text("change to the Caddyfile:", style="bold"))
        parts.append(diff_text(result.caddyfile_diff))
    for check in result.checks:
        mark, style = ("✓", "green") if check.ok else ("✗", "red")
        parts.append(Text(f"  {mark} {escape.term(check.name)}: {escape.term(check.detail)}",
                          style=style))
    for line in result.lines:
        parts.append(Text(escape.term(line)))
    for warning in result.warnings:
        parts.append(Text("warning: " + escape.term(warning), style="yellow"))
    headline = Text(escape.term(result.headline), style=CODE_STYLE.get(result.code, "bold"))
    if result.unknown:
        parts.append(Panel(headline, title="⚠ CADDY STATE UNKNOWN", border_style="bold red"))
    else:
        parts.append(headline)
    return Group(*parts)


def flip_text(status: FlipStatus | None) -> Text | None:
    """The ``gates``/``bench`` line saying when the cutover (or rollback) happened."""
    line = flip_line(status) if status is not None else None
    if line is None:
        return None
    style = "bold cyan" if status is not None and status.on == "v2" else "yellow"
    return Text(escape.term(line), style=style)


def flip_markdown(status: FlipStatus | None) -> str:
    """A "Cutover" section for CUTOVER.md when the route was flipped (or rolled back)."""
    line = flip_line(status) if status is not None else None
    if line is None:
        return ""
    assert status is not None
    return (f"\n## Cutover\n\n- {escape.markdown(line)}\n- cutovers {status.cutovers}, "
            f"rollbacks {status.rollbacks}; the route points at {status.on} now\n")
