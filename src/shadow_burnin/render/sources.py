"""``bench --by source`` / ``--by shard``: one row per origin or shard of the rounds."""

from __future__ import annotations

from rich.table import Table

from shadow_burnin.core.stats import Summary
from shadow_burnin.render.escape import markup
from shadow_burnin.render.text import fmt_ms, fmt_pct


def sources_table(by_source: dict[str, Summary], key: str = "source") -> Table:
    """One row per source (``key="shard"``: per shard, ``bench --by shard``)."""
    table = Table(title=f"by {key}", title_justify="left")
    for col in (key, "rounds", "parity", "exact %", "no-match", "not-comparable",
                "client-cancelled", "v1 unreach.", "v2 unreach.", "v1 p50", "v2 p50"):
        table.add_column(col, justify="left" if col == key else "right")
    for source, s in by_source.items():
        c = s.counts
        lat = {side: (s.latency_ms[side] or {}).get("p50") for side in ("v1", "v2")}
        table.add_row(markup(source), f"{s.rounds:,}", f"{s.parity_rounds:,}",
                      fmt_pct(s.exact_match_rate), f"{c['no-match']:,}",
                      f"{c['not-comparable']:,}", f"{c['client-cancelled']:,}",
                      f"{c['v1-unreachable'] + c['both-unreachable']:,}",
                      f"{c['v2-unreachable'] + c['both-unreachable']:,}",
                      fmt_ms(lat["v1"]), fmt_ms(lat["v2"]))
    return table
