"""The config sections of the cutover: ``[gates]``, ``[halt]``, ``[alerts]`` and ``[ppl]``.

Kept apart from ``config`` to keep that module small; ``config.load`` validates the
key types (``config.SCHEMA``) and calls :func:`build_sections` for the values.
"""

from __future__ import annotations

from typing import Any

import msgspec

from shadow_burnin.core import limits
from shadow_burnin.core.gates import DEFAULT_GATES, SCOPES, GateSpec, merge_specs
from shadow_burnin.core.halt import HALT_ON, HaltRule
from shadow_burnin.core.liveness import LivenessRule
from shadow_burnin.values import check_url, in_bounds, parse_duration, positive


class GatesConfig(msgspec.Struct, frozen=True):
    """``[gates]``: options plus one ``[gates.NAME]`` table per gate to change or add."""

    statistical: bool = False
    bootstrap: int = 1000
    seed: int = 0
    specs: tuple[GateSpec, ...] = DEFAULT_GATES
    scope: str = "pooled"  # several logs: "pooled" (their rounds together) or "shard"


_HALT = HaltRule()  # its defaults are [halt]'s (a Struct's class has no field defaults)


class HaltConfig(msgspec.Struct, frozen=True):
    """``[halt]``: the no-match spike halt watched by ``run``."""

    enabled: bool = True
    window: float = _HALT.window_s
    min_rounds: int = _HALT.min_rounds
    threshold: float = _HALT.threshold
    action: str = "flag"
    on_halt: str | None = None
    webhook: str | None = None
    webhook_timeout: float = 10.0
    worst: int = _HALT.worst
    on: str = _HALT.on  # "no-match" | "regression" (core.halt.HALT_ON)

    def rule(self) -> HaltRule:
        """The detector's parameters from this section."""
        return HaltRule(self.window, self.min_rounds, self.threshold, self.worst, self.on)


_LIVE = LivenessRule()


class AlertsConfig(msgspec.Struct, frozen=True):
    """``[alerts]``: the liveness alerts of ``run`` and ``status --alert`` (no round
    committed for ``stall``; a side unreachable in ``spike_rounds`` of the last
    ``spike_window`` rounds), sent through the ``[halt]`` alert channel."""

    enabled: bool = True
    stall: float = _LIVE.stall_s
    spike_window: int = _LIVE.spike_window
    spike_rounds: int = _LIVE.spike_rounds

    def rule(self) -> LivenessRule:
        return LivenessRule(self.stall, self.spike_window, self.spike_rounds)


class PplConfig(msgspec.Struct, frozen=True):
    """``[ppl]``: ``shadow-burnin ppl`` (text, window, top-K, method per side)."""

    text: str | None = None
    window: int = 1024
    top_k: int = 10
    v1_method: str = "auto"
    v2_method: str = "auto"
    v1_endpoint: str = "/ppl"
    v2_endpoint: str = "/ppl"
    max_windows: int | None = None
    timeout: float = 3600.0  # llama-cpp-python's echo: ~1.5 s per token (notes/gates.md)
    log: str | None = None


PPL_METHODS = ("auto", "echo", "llama", "endpoint")


def _gates(raw: dict[str, Any]) -> GatesConfig:
    options = {k: v for k, v in raw.items()
               if k in ("statistical", "bootstrap", "seed", "scope")}
    tables = {k: v for k, v in raw.items() if k not in options}
    cfg = GatesConfig(**options, specs=tuple(merge_specs(tables)))
    in_bounds("gates.bootstrap", cfg.bootstrap, limits.BOOTSTRAP)
    in_bounds("gates.seed", cfg.seed, limits.SEED)
    if cfg.scope not in SCOPES:
        raise ValueError(f"gates.scope must be one of {', '.join(SCOPES)}, "
                         f"got {cfg.scope!r}")
    return cfg


def _halt(raw: dict[str, Any]) -> HaltConfig:
    raw = dict(raw)
    if "window" in raw:
        raw["window"] = parse_duration(raw["window"], "halt.window")
    cfg = HaltConfig(**raw)
    in_bounds("halt.min_rounds", cfg.min_rounds, limits.HALT_MIN_ROUNDS)
    positive("halt.webhook_timeout", cfg.webhook_timeout)
    in_bounds("halt.webhook_timeout", cfg.webhook_timeout, limits.TIMEOUT_S)
    in_bounds("halt.worst", cfg.worst, limits.HALT_WORST)
    if not 0 <= cfg.threshold < 1:
        raise ValueError(f"halt.threshold must be in [0, 1), got {cfg.threshold}")
    if cfg.action not in ("flag", "stop"):
        raise ValueError(f"halt.action must be 'flag' or 'stop', got {cfg.action!r}")
    if cfg.on not in HALT_ON:
        raise ValueError(f"halt.on must be one of {', '.join(map(repr, HALT_ON))}, "
                         f"got {cfg.on!r}")
    if cfg.webhook is not None:
        check_url("halt.webhook", cfg.webhook, allow_query=True)
    return cfg


def _alerts(raw: dict[str, Any]) -> AlertsConfig:
    raw = dict(raw)
    if "stall" in raw:
        raw["stall"] = parse_duration(raw["stall"], "alerts.stall")
    cfg = AlertsConfig(**raw)
    in_bounds("alerts.spike_window", cfg.spike_window, limits.ALERT_SPIKE_WINDOW)
    cfg.rule()  # the rule's own checks (ValueError names the key)
    return cfg


def _ppl(raw: dict[str, Any]) -> PplConfig:
    cfg = PplConfig(**raw)
    in_bounds("ppl.window", cfg.window, limits.PPL_WINDOW)
    in_bounds("ppl.top_k", cfg.top_k, limits.PPL_TOP_K)
    for side in ("v1", "v2"):
        method = getattr(cfg, f"{side}_method")
        if method not in PPL_METHODS:
            raise ValueError(f"ppl.{side}_method must be one of {', '.join(PPL_METHODS)}, "
                             f"got {method!r}")
        if not getattr(cfg, f"{side}_endpoint").startswith("/"):
            raise ValueError(f"ppl.{side}_endpoint must be a path starting with /")
    if cfg.max_windows is not None:
        in_bounds("ppl.max_windows", cfg.max_windows, limits.PPL_MAX_WINDOWS)
    positive("ppl.timeout", cfg.timeout)
    in_bounds("ppl.timeout", cfg.timeout, limits.TIMEOUT_S)
    return cfg


def build_sections(m: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``Config`` keyword arguments for the four sections; ValueError if invalid."""
    return {"gates": _gates(m.get("gates", {})), "halt": _halt(m.get("halt", {})),
            "alerts": _alerts(m.get("alerts", {})), "ppl": _ppl(m.get("ppl", {}))}
