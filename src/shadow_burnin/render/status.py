"""``status`` on a terminal (every string from data through ``escape.markup``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from shadow_burnin.render.escape import markup


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def status_text(st: Mapping[str, Any]) -> RenderableType:
    halt = st["halt"]
    lines = [
        f"[bold]log[/] {markup(st['log'])}",
        f"[bold]rounds[/] {st['rounds']:,}   [bold]rate[/] {st['rounds_per_minute']:,.1f} "
        f"rounds/min (last {st['window_s'] / 60:g} min)",
        f"[bold]last round[/] {markup(st['last_round_ts'] or '—')} "
        f"({_age(st['last_round_age_s'])} ago)",
        "[bold]halt[/] " + ("[bold red]ACTIVE[/] since " +
                            markup((halt.get('halt') or {}).get('ts')) if halt["active"]
                            else "[green]none[/]"),
        f"[bold]verdict[/] {markup(st['verdict'])}",
    ]
    for alert in st.get("alerts", []):
        lines.append(f"[bold red]ALERT[/] {markup(alert['text'])}")
    parts: list[RenderableType] = [Text.from_markup("\n".join(lines))]
    if st.get("shards"):
        parts.append(shards_table(st["shards"]))
    if st["waiting"]:
        t = Table(title="waiting gates", title_justify="left")
        t.add_column("gate")
        t.add_column("current", justify="right")
        t.add_column("ETA at the current rate")
        for g in st["waiting"]:
            cur = g["current"]
            t.add_row(markup(g["label"]), "—" if cur is None else f"{cur:,.6g}",
                      markup(g["eta"] or f"— ({g['why']})"))
        parts.append(t)
    return Group(*parts)


def shards_table(shards: list[Mapping[str, Any]]) -> RenderableType:
    """One line per shard of a fleet's ``status``."""
    t = Table(title="shards", title_justify="left")
    for col in ("shard", "rounds", "rounds/min", "last round", "halt", "verdict", "alerts"):
        t.add_column(col, justify="right" if col in ("rounds", "rounds/min", "alerts")
                     else "left")
    for s in shards:
        t.add_row(Text.from_markup(markup(s["shard"])), f"{s['rounds']:,}",
                  f"{s['rounds_per_minute']:,.1f}",
                  Text.from_markup(f"{markup(s['last_round_ts'] or '—')} "
                                   f"({_age(s['last_round_age_s'])} ago)"),
                  Text.from_markup("[bold red]ACTIVE[/]" if s["halt"]["active"]
                                   else "[green]none[/]"),
                  Text.from_markup(markup(s["verdict"])), str(len(s["alerts"])))
    return t
