"""Progress displays for ``run``: a live rich panel on a terminal, plain lines otherwise.

Both keep a bounded window of recent latencies for a running p95; neither reads files.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from shadow_burnin.core.records import BUCKETS, SIDES
from shadow_burnin.render.escape import term
from shadow_burnin.render.text import GLYPH, STYLE, fmt_ms, fmt_pct

WINDOW = 1000


class _Tally:
    def __init__(self) -> None:
        self.lat: dict[str, deque[float]] = {s: deque(maxlen=WINDOW) for s in SIDES}
        self.glyphs: deque[str] = deque(maxlen=60)
        self.target: int | None = None
        self.start_round = 0

    def add(self, record: dict[str, Any]) -> None:
        for side in SIDES:
            reply = record[side]
            if reply.get("error") is None and reply.get("latency_ms") is not None:
                self.lat[side].append(reply["latency_ms"])
        self.glyphs.append(record["bucket"])

    def p95(self, side: str) -> float | None:
        values = self.lat[side]
        return float(np.percentile(np.fromiter(values, float), 95)) if values else None


def _exact_rate(counts: dict[str, int]) -> tuple[float | None, int]:
    parity = counts["exact"] + counts["prefix-only"] + counts["no-match"]
    return (counts["exact"] / parity if parity else None), parity


class PlainProgress:
    """One line every ``every`` rounds (for systemd, CI, pipes), warnings as lines."""

    def __init__(self, console: Console, every: int = 50) -> None:
        self.console = console
        self.every = every
        self.tally = _Tally()
        self.done = 0

    def started(self, state: Any, target: int | None) -> None:
        self.tally.target = target
        self.console.print(f"shadow-burnin: starting after round {state.last_round}"
                           + (f", {target} rounds to go" if target else ""), highlight=False)

    def round_done(self, record: dict[str, Any], state: Any) -> None:
        self.tally.add(record)
        self.done += 1
        if self.done % self.every == 0:
            self.console.print(line(state, self.tally), highlight=False)

    def warn(self, message: str) -> None:
        self.console.print(f"warning: {term(message)}", highlight=False, markup=False)

    def stopped(self, reason: str, state: Any) -> None:
        # the tally at the end; why it stopped is the caller's one final line
        self.console.print(line(state, self.tally), highlight=False)


def line(state: Any, tally: _Tally) -> str:
    rate, parity = _exact_rate(state.counts)
    parts = " ".join(f"{b} {state.counts[b]}" for b in BUCKETS)
    return (f"round {state.last_round}: exact {fmt_pct(rate)} of {parity} parity | {parts} | "
            f"p95 v1 {fmt_ms(tally.p95('v1'))} v2 {fmt_ms(tally.p95('v2'))}")


class LiveProgress:
    """A live panel on a terminal: rounds, exact %, buckets, p95 per side, recent glyphs."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.tally = _Tally()
        self.done = 0
        self.live = Live(console=console, refresh_per_second=4, transient=False)
        self.state: Any = None

    def started(self, state: Any, target: int | None) -> None:
        self.tally.target = target
        self.state = state
        self.live.start()
        self.live.update(self._panel())

    def round_done(self, record: dict[str, Any], state: Any) -> None:
        self.tally.add(record)
        self.done += 1
        self.state = state
        self.live.update(self._panel())

    def warn(self, message: str) -> None:
        self.console.print(Text(f"warning: {term(message)}", style="yellow"))

    def stopped(self, reason: str, state: Any) -> None:
        # the final panel; why it stopped is the caller's one final line
        self.state = state
        self.live.update(self._panel())
        self.live.stop()

    def _panel(self, footer: str = "") -> Panel:
        state = self.state
        rate, parity = _exact_rate(state.counts)
        target = f" / {self.tally.target}" if self.tally.target else ""
        head = Text.assemble(
            ("rounds ", "dim"), (f"{self.done}{target}", "bold"),
            ("  (log total ", "dim"), (str(state.last_round), ""), (")  exact ", "dim"),
            (fmt_pct(rate), "bold green" if rate is not None and rate >= 0.9 else "bold red"),
            (f" of {parity} parity", "dim"),
        )
        table = Table.grid(padding=(0, 2))
        table.add_row(*(Text(b, style=STYLE[b]) for b in BUCKETS))
        table.add_row(*(Text(str(state.counts[b])) for b in BUCKETS))
        lat = Text.assemble(("p95 (last 1000) ", "dim"),
                            ("v1 ", "dim"), (fmt_ms(self.tally.p95("v1")), ""),
                            ("   v2 ", "dim"), (fmt_ms(self.tally.p95("v2")), ""))
        glyphs = Text("recent ", style="dim")
        for bucket in self.tally.glyphs:
            glyphs.append(GLYPH[bucket], style=STYLE[bucket])
        parts: list[Any] = [head, table, lat, glyphs]
        if footer:
            parts.append(Text(footer, style="bold"))
        return Panel(Group(*parts), title="shadow-burnin", border_style="cyan")


class NullProgress:
    def started(self, state: Any, target: int | None) -> None: ...
    def round_done(self, record: dict[str, Any], state: Any) -> None: ...
    def warn(self, message: str) -> None: ...
    def stopped(self, reason: str, state: Any) -> None: ...


def make_progress(console: Console, *, quiet: bool = False) -> Any:
    if quiet:
        return NullProgress()
    return LiveProgress(console) if console.is_terminal else PlainProgress(console)
