"""The "HTML report" section of CUTOVER.md (``gates --write … --report FILE``): a relative
link to the report written beside it, the file's size and SHA-256 (so a reader of the
cutover post can check the attachment), and the report's headline figures.

Every string from data (the report's file name, the run-level verdict's explanation)
goes through ``escape.markdown``; the link target is percent-encoded, so no file name
can end the link, start a new one, or inject HTML.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from shadow_burnin.render.escape import markdown as md
from shadow_burnin.render.text import signed


def link_target(relative: str) -> str:
    """A Markdown link destination for a relative POSIX path: every byte that is not a
    plain path character percent-encoded (spaces, parentheses, brackets, ``<>``, quotes,
    controls), so the destination is one token that resolves to the file."""
    return quote(relative, safe="/")


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f} %"


def _ms(value: Any) -> str:
    return "—" if not isinstance(value, int | float) else f"{value:,.1f} ms"


def report_section(relative: str, name: str, size: int, sha256: str,
                   ov: Mapping[str, Any], run_verdict: Mapping[str, Any] | None) -> str:
    """Markdown for the report section (``ov``: the report's own overview)."""
    ci = ov.get("exact_match_ci95")
    lat = ov.get("latency_ms") or {}
    gap = ov.get("p95_gap_ms")
    out = [
        "## HTML report",
        "",
        f"[{md(name)}]({link_target(relative)}) — the self-contained report of the same "
        f"rounds (overview, plots, gates, worst prompts, divergences side by side; no "
        f"script, no network): {size:,} bytes, SHA-256 `{sha256}`.",
        "",
        f"- exact match: {_pct(ov.get('exact_match_rate'))} of "
        f"{int(ov.get('parity_rounds') or 0):,} parity rounds"
        + (f" (95 % Wilson {_pct(ci[0])} – {_pct(ci[1])})" if ci else ""),
        f"- p95 latency: v1 {_ms((lat.get('v1') or {}).get('p95'))}, "
        f"v2 {_ms((lat.get('v2') or {}).get('p95'))}; p95 gap (v2 − v1) "
        + ("—" if not isinstance(gap, int | float) else f"{signed(gap)} ms"),
    ]
    if run_verdict:
        out.append(f"- run-level verdict: **{md(run_verdict.get('decision'))}** — "
                   f"{md(run_verdict.get('explanation'))}")
    else:
        out.append("- run-level verdict: — (no parity round)")
    out.append(f"- gates in the report: {md((ov.get('gates') or {}).get('verdict'))}")
    return "\n".join(out) + "\n"
