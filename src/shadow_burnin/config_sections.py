"""The config sections of the cutover: ``[gates]``, ``[halt]`` and ``[ppl]``.

Kept apart from ``config`` to keep that module small; ``config.load`` validates the
key types (``config.SCHEMA``) and calls :func:`build_sections` for the values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shadow_burnin.core.gates import DEFAULT_GATES, GateSpec, merge_specs


@dataclass(frozen=True)
class GatesConfig:
    """``[gates]``: options plus one ``[gates.NAME]`` table per gate to change or add."""

    statistical: bool = False
    bootstrap: int = 1000
    seed: int = 0
    specs: tuple[GateSpec, ...] = DEFAULT_GATES


@dataclass(frozen=True)
class HaltConfig:
    """``[halt]``: the no-match spike halt watched by ``run``."""

    enabled: bool = True
    window: float = 3600.0
    min_rounds: int = 30
    threshold: float = 0.20
    action: str = "flag"
    on_halt: str | None = None
    webhook: str | None = None
    webhook_timeout: float = 10.0
    worst: int = 5


@dataclass(frozen=True)
class PplConfig:
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
    options = {k: v for k, v in raw.items() if k in ("statistical", "bootstrap", "seed")}
    tables = {k: v for k, v in raw.items() if k not in options}
    cfg = GatesConfig(**options, specs=tuple(merge_specs(tables)))
    positive("gates.bootstrap", cfg.bootstrap)
    return cfg


def _halt(raw: dict[str, Any]) -> HaltConfig:
    raw = dict(raw)
    if "window" in raw:
        from shadow_burnin.config import parse_duration

        raw["window"] = parse_duration(raw["window"], "halt.window")
    cfg = HaltConfig(**raw)
    positive("halt.min_rounds", cfg.min_rounds)
    positive("halt.webhook_timeout", cfg.webhook_timeout)
    positive("halt.worst", cfg.worst)
    if not 0 <= cfg.threshold < 1:
        raise ValueError(f"halt.threshold must be in [0, 1), got {cfg.threshold}")
    if cfg.action not in ("flag", "stop"):
        raise ValueError(f"halt.action must be 'flag' or 'stop', got {cfg.action!r}")
    if cfg.webhook is not None:
        check_url("halt.webhook", cfg.webhook)
    return cfg


def _ppl(raw: dict[str, Any]) -> PplConfig:
    cfg = PplConfig(**raw)
    if cfg.window < 2:
        raise ValueError(f"ppl.window must be at least 2 tokens, got {cfg.window}")
    if not 1 <= cfg.top_k <= 100:
        raise ValueError(f"ppl.top_k must be 1..100, got {cfg.top_k}")
    for side in ("v1", "v2"):
        method = getattr(cfg, f"{side}_method")
        if method not in PPL_METHODS:
            raise ValueError(f"ppl.{side}_method must be one of {', '.join(PPL_METHODS)}, "
                             f"got {method!r}")
        if not getattr(cfg, f"{side}_endpoint").startswith("/"):
            raise ValueError(f"ppl.{side}_endpoint must be a path starting with /")
    if cfg.max_windows is not None:
        positive("ppl.max_windows", cfg.max_windows)
    positive("ppl.timeout", cfg.timeout)
    return cfg


def positive(name: str, value: float) -> None:
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")


def check_url(name: str, url: str) -> None:
    from shadow_burnin.config import _check_url

    _check_url(name, url)


def build_sections(m: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``Config`` keyword arguments for the three sections; ValueError if invalid."""
    return {"gates": _gates(m.get("gates", {})), "halt": _halt(m.get("halt", {})),
            "ppl": _ppl(m.get("ppl", {}))}
