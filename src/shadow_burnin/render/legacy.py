"""``import-legacy``'s report as plain lines (the caller escapes them for the terminal)."""

from __future__ import annotations

from typing import Any

from shadow_burnin.core.records import BUCKETS


def _table(rows: list[tuple[str, Any, Any]], head: tuple[str, str, str]) -> list[str]:
    width = max(len(r[0]) for r in [head, *rows])
    cells = [(k, "-" if a is None else str(a), "-" if b is None else str(b))
             for k, a, b in [head, *rows]]
    w1 = max(len(c[1]) for c in cells)
    w2 = max(len(c[2]) for c in cells)
    return [f"  {k:<{width}}  {a:>{w1}}  {b:>{w2}}" for k, a, b in cells]


def report_lines(out: dict[str, Any]) -> list[str]:
    tally = out["tally"]
    lines = [f"imported {out['imported']} rounds from {out['source']} into {out['log']}"
             + (f" (rounds {out['first_round']}–{out['last_round']})" if out["imported"] else "")]
    lines.append("buckets: the old tool's verdicts, then re-classified from the two texts")
    lines += _table([(b, tally["old_buckets"][b], tally["buckets"][b]) for b in BUCKETS],
                    ("bucket", "old tool", "re-classified"))
    moves = ", ".join(f"{m['old']} → {m['new']} {m['rounds']}" for m in tally["moves"])
    lines.append(f"re-bucketed: {tally['rebucketed']} of {tally['rounds']} pairs"
                 + (f" ({moves})" if moves else ""))
    if tally["prefix_chars_changed"]:
        lines.append(f"prefix_match_chars re-computed differently in "
                     f"{tally['prefix_chars_changed']} rounds")
    comparison = out.get("state_comparison")
    if comparison is not None:
        lines.append(f"legacy state {out['legacy_state']} vs the log:")
        lines += _table([(r["key"], r["state"], r["log"]) for r in comparison["rows"]],
                        ("counter", "state", "log"))
        lines += [f"  - {note}" for note in comparison["notes"]]
    lines += [f"note: {note}" for note in out.get("notes", [])]
    return lines
