"""Cutover gates: configured rules checked against measured figures (pure).

A gate is ``metric comparator target`` (e.g. ``exact_match_rate >= 0.90``). Each one ends
in one of three states:

- ✓ ``pass``: the figure meets the target;
- ✗ ``fail``: it does not, and more data will not fix that by itself;
- ⌛ ``waiting``: not decided yet: no data (and ``must_have_data``), a figure that only
  grows (rounds, wall time) and has not got there yet, or — with ``statistical`` — an
  interval that straddles the target.

``within`` compares ``|value − baseline| <= target`` (the PPL gate: v2's PPL within
± 0.05 of a baseline, by default v1's PPL measured in the same run).

The figures themselves are made by ``core.figures``; this module only decides.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec
from msgspec.structs import replace

from shadow_burnin.core.timefmt import iso_ms

PASS, FAIL, WAIT = "pass", "fail", "waiting"
SYMBOL = {PASS: "✓", FAIL: "✗", WAIT: "⌛"}
EXIT_CODE = {PASS: 0, FAIL: 1, WAIT: 3}

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt,
    "==": operator.eq, "!=": operator.ne,
}
COMPARATORS: tuple[str, ...] = (*_OPS, "within")

# metric -> (unit, what it is); units steer formatting only
METRICS: dict[str, tuple[str, str]] = {
    "rounds": ("count", "rounds logged"),
    "parity_rounds": ("count", "rounds where both sides replied"),
    "wall_time_h": ("h", "burn-in wall time: last round − first round (log timestamps)"),
    "exact_match_rate": ("ratio", "exact / parity rounds"),
    "v1_unreachable_rate": ("ratio", "rounds v1 did not reply / rounds"),
    "v2_unreachable_rate": ("ratio", "rounds v2 did not reply / rounds"),
    "p95_gap_ms": ("ms", "p95 latency v2 − v1"),
    "median_prefix_match_chars": ("chars", "median shared prefix of non-exact rounds"),
    "active_halt": ("flag", "1 while a no-match halt is not acknowledged"),
    "run_changed": ("flag", "1 when the run-level verdict says the distribution changed"),
    "run_off_path": ("flag", "1 when the run's margins moved beyond one kernel's "
                     "thread/batch noise (numeric_path other or beyond)"),
    "ppl_v1": ("ppl", "v1's perplexity (latest `ppl` run)"),
    "ppl_v2": ("ppl", "v2's perplexity (latest `ppl` run)"),
    "mean_nll_diff": ("nats", "paired mean NLL v2 − v1 (latest `ppl` run)"),
    "kld_mean": ("nats", "mean KL(v1‖v2) over top-K union + tail (latest `ppl` run)"),
    "same_top1_rate": ("ratio", "positions whose most likely token agrees"),
    "rms_dp": ("ratio", "RMS of the difference in the actual token's probability"),
    "v2_p95_drift_ms": ("ms", "v2 p95 over its last N replies − over its first N"),
    "v2_p95_drift_ratio": ("ratio", "v2 p95 over its last N replies ÷ over its first N"),
    "relative_drift_ms": ("ms", "(v2 − v1) p95 gap, last N paired rounds − first N"),
}


class GateSpec(msgspec.Struct, frozen=True):
    """One rule. ``baseline`` only for ``within`` (None: the metric's own baseline)."""

    name: str
    metric: str
    comparator: str
    target: float
    must_have_data: bool = True
    baseline: float | None = None
    enabled: bool = True
    label: str = ""

    def describe(self) -> str:
        if self.label:
            return self.label
        if self.comparator == "within":
            base = "baseline" if self.baseline is None else f"{self.baseline:g}"
            return f"{self.metric} within ±{self.target:g} of {base}"
        op = {">=": "≥", "<=": "≤", "!=": "≠"}.get(self.comparator, self.comparator)
        unit = METRICS.get(self.metric, ("", ""))[0]
        target = f"{100 * self.target:g} %" if unit == "ratio" else f"{self.target:g}"
        if unit in ("ms", "h", "chars"):
            target += f" {unit}"
        return f"{self.metric} {op} {target}"


# The earlier CUTOVER.md, as defaults. ``drift`` is there but off: enable it in the config.
DEFAULT_GATES: tuple[GateSpec, ...] = (
    GateSpec("ppl", "ppl_v2", "within", 0.05, label="PPL within ±0.05 of baseline"),
    GateSpec("exact_match", "exact_match_rate", ">=", 0.90, label="exact match ≥ 90 %"),
    GateSpec("rounds", "rounds", ">=", 50_000.0, label="rounds ≥ 50 000"),
    GateSpec("v2_unreachable", "v2_unreachable_rate", "<", 0.001,
             label="v2 unreachable < 0.1 %"),
    GateSpec("p95_gap", "p95_gap_ms", "<", 100.0, label="p95 gap < 100 ms"),
    GateSpec("prefix_match", "median_prefix_match_chars", ">=", 40.0, must_have_data=False,
             label="median prefix match ≥ 40 chars"),
    GateSpec("wall_time", "wall_time_h", ">=", 72.0, label="wall time ≥ 72 h"),
    GateSpec("halt", "active_halt", "==", 0.0, label="no active halt"),
    GateSpec("drift", "relative_drift_ms", "<", 50.0, must_have_data=False, enabled=False,
             label="v2 does not slow vs v1 (last − first 200) < 50 ms"),
)
GATE_KEYS = {"metric", "comparator", "target", "must_have_data", "baseline", "enabled",
             "label"}


class Figure(msgspec.Struct, frozen=True):
    """A metric's current value and what stands behind it.

    ``samples``: rounds (or tokens) behind the figure; ``as_of``: epoch seconds of the
    newest data it uses (a log timestamp, never the clock); ``interval``: its 95 %
    interval, present in statistical mode; ``baseline``: the natural reference for
    ``within``; ``grows``: the figure only increases as the burn-in goes on.
    """

    value: float | None
    samples: int = 0
    as_of: float | None = None
    interval: tuple[float, float] | None = None
    baseline: float | None = None
    grows: bool = False
    note: str = ""


class GateResult(msgspec.Struct, frozen=True):
    spec: GateSpec
    state: str
    figure: Figure
    reason: str
    baseline: float | None = None

    def to_json(self) -> dict[str, Any]:
        f = self.figure
        return {
            "gate": self.spec.name, "metric": self.spec.metric,
            "comparator": self.spec.comparator, "target": self.spec.target,
            "baseline": self.baseline, "must_have_data": self.spec.must_have_data,
            "label": self.spec.describe(), "state": self.state,
            "symbol": SYMBOL[self.state], "current": _finite(f.value),
            "interval": list(f.interval) if f.interval else None,
            "samples": f.samples, "as_of": _iso(f.as_of), "reason": self.reason,
        }


class GateReport(msgspec.Struct, frozen=True):
    results: list[GateResult]
    statistical: bool = False
    rounds: int = 0
    as_of: float | None = None
    notes: list[str] = msgspec.field(default_factory=list)

    @property
    def verdict(self) -> str:
        """fail if any gate fails, else waiting if any waits, else pass."""
        states = {r.state for r in self.results}
        return FAIL if FAIL in states else WAIT if WAIT in states else PASS

    @property
    def exit_code(self) -> int:
        return EXIT_CODE[self.verdict]

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "exit_code": self.exit_code,
                "statistical": self.statistical, "rounds": self.rounds,
                "as_of": _iso(self.as_of),
                "gates": [r.to_json() for r in self.results], "notes": list(self.notes)}


def format_value(metric: str, value: float | None) -> str:
    """A metric's value in its unit (``METRICS``): ``93.27 %``, ``+12.0 ms``, ``71.5 h``."""
    if value is None:
        return "—"
    unit = METRICS.get(metric, ("", ""))[0]
    if unit == "count":
        return f"{value:,.0f}"
    if unit == "ratio":
        return f"{100 * value:.{3 if abs(value) < 0.01 else 2}f} %"
    if unit == "ms":
        text = f"{value:+,.1f}"
        return f"{'0.0' if round(value, 1) == 0 else text} ms"  # never "-0.0 ms"
    if unit == "h":
        return f"{value:,.1f} h"
    if unit == "chars":
        return f"{value:,.0f} chars"
    if unit == "flag":
        return "active" if value else "none"
    if unit == "ppl":
        return f"{value:.4f}"
    return f"{value:.5f}"


def _iso(t: float | None) -> str | None:
    """Epoch seconds → the log's ISO-8601 form (``…Z``)."""
    return None if t is None else iso_ms(t)


def _finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


def evaluate_gate(spec: GateSpec, figure: Figure, *, statistical: bool = False) -> GateResult:
    """Decide one gate. Pure: the same spec and figure always give the same state."""
    value = figure.value
    if value is None or not math.isfinite(value):
        if spec.must_have_data:
            return GateResult(spec, WAIT, figure, figure.note or "no data yet")
        return GateResult(spec, PASS, figure, figure.note or "no data (not required)")
    if spec.comparator == "within":
        return _within(spec, figure, value)
    op = _OPS[spec.comparator]
    if statistical and figure.interval is not None and spec.comparator in ("<", "<=", ">", ">="):
        lo, hi = figure.interval
        ok_lo, ok_hi = op(lo, spec.target), op(hi, spec.target)
        span = (f"95 % interval [{format_value(spec.metric, lo)}, "
                f"{format_value(spec.metric, hi)}]")
        if ok_lo and ok_hi:
            return GateResult(spec, PASS, figure, f"{span} meets the target")
        if not ok_lo and not ok_hi:
            return GateResult(spec, FAIL, figure, f"{span} misses the target")
        return GateResult(spec, WAIT, figure, f"{span} straddles the target: needs more rounds")
    shown, target = format_value(spec.metric, value), format_value(spec.metric, spec.target)
    if op(value, spec.target):
        return GateResult(spec, PASS, figure, f"{shown} meets {spec.comparator} {target}")
    if figure.grows and spec.comparator in (">", ">="):
        return GateResult(spec, WAIT, figure, f"{shown} of {target} so far")
    return GateResult(spec, FAIL, figure, f"{shown} misses {spec.comparator} {target}")


def _within(spec: GateSpec, figure: Figure, value: float) -> GateResult:
    baseline = spec.baseline if spec.baseline is not None else figure.baseline
    if baseline is None or not math.isfinite(baseline):
        state = WAIT if spec.must_have_data else PASS
        return GateResult(spec, state, figure, "no baseline to compare with")
    delta = value - baseline
    ok = abs(delta) <= spec.target + 1e-9 * max(1.0, abs(baseline))  # float rounding
    why = f"Δ {delta:+.4f} vs baseline {baseline:.4f} (tolerance ±{spec.target:g})"
    return GateResult(spec, PASS if ok else FAIL, figure, why, baseline=baseline)


def evaluate(specs: Sequence[GateSpec], figures: Mapping[str, Figure], *,
             statistical: bool = False, rounds: int = 0, as_of: float | None = None,
             notes: Sequence[str] = ()) -> GateReport:
    """Every enabled gate against the figures (a metric without a figure has no data)."""
    results = [evaluate_gate(s, figures.get(s.metric, Figure(None)), statistical=statistical)
               for s in specs if s.enabled]
    return GateReport(results, statistical, rounds, as_of, list(notes))


def merge_specs(overrides: Mapping[str, Mapping[str, Any]],
                defaults: Sequence[GateSpec] = DEFAULT_GATES) -> list[GateSpec]:
    """The default table with the config's ``[gates.NAME]`` tables applied.

    A table named like a default gate changes only the keys it sets; a new name adds a
    gate and must set ``metric``, ``comparator`` and ``target``. Raises ValueError with
    a message naming ``gates.NAME.KEY`` for anything wrong.
    """
    by_name = {g.name: g for g in defaults}
    order = [g.name for g in defaults]
    for name, table in overrides.items():
        where = f"gates.{name}"
        unknown = sorted(set(table) - GATE_KEYS)
        if unknown:
            raise ValueError(f"unknown key {where}.{unknown[0]}")
        base = by_name.get(name)
        if base is None:
            missing = [k for k in ("metric", "comparator", "target") if k not in table]
            if missing:
                raise ValueError(f"{where}: a new gate needs {', '.join(missing)}")
            base = GateSpec(name, str(table["metric"]), str(table["comparator"]), 0.0)
            order.append(name)
        changes = _checked(where, table)
        if "label" not in changes and changes.keys() & {"metric", "comparator", "target",
                                                        "baseline"}:
            changes["label"] = ""  # the default's label no longer says what it checks
        spec = replace(base, **changes)
        if spec.comparator == "within" and spec.target < 0:
            raise ValueError(f"{where}.target: a 'within' tolerance must be >= 0")
        by_name[name] = spec
    return [by_name[n] for n in order]


def _checked(where: str, table: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key in ("metric", "comparator", "label"):
            if not isinstance(value, str):
                raise ValueError(f"{where}.{key} must be a string, got {value!r}")
        elif key in ("must_have_data", "enabled"):
            if not isinstance(value, bool):
                raise ValueError(f"{where}.{key} must be true or false, got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value):
            raise ValueError(f"{where}.{key} must be a number, got {value!r}")
        out[key] = float(value) if key in ("target", "baseline") else value
    if "metric" in out and out["metric"] not in METRICS:
        raise ValueError(f"{where}.metric: unknown metric {out['metric']!r} "
                         f"(one of {', '.join(METRICS)})")
    if "comparator" in out and out["comparator"] not in COMPARATORS:
        raise ValueError(f"{where}.comparator must be one of {' '.join(COMPARATORS)}, "
                         f"got {out['comparator']!r}")
    return out


SCOPES = ("pooled", "shard")  # ``[gates] scope``: judge the shards' rounds pooled, or each


def shard_report(reports: Mapping[str, GateReport]) -> GateReport:
    """Gates judged per shard as one report: every shard's gates, each named
    ``<shard>: <gate>`` so the table says which shard failed; the verdict is the worst
    shard's (every shard must pass)."""
    results = [replace(r, spec=replace(r.spec, name=f"{shard}:{r.spec.name}",
                                       label=f"{shard}: {r.spec.describe()}"))
               for shard, report in reports.items() for r in report.results]
    first = next(iter(reports.values()), None)
    stamps = [r.as_of for r in reports.values() if r.as_of is not None]
    notes = [f"{shard}: {n}" for shard, report in reports.items() for n in report.notes]
    return GateReport(results, statistical=first.statistical if first else False,
                      rounds=sum(r.rounds for r in reports.values()),
                      as_of=max(stamps) if stamps else None, notes=notes)
