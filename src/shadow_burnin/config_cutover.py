"""The ``[cutover]`` section: where Caddy's admin API is, which route to flip, how to
announce it and the limits of the watched promotion.

Self-contained (types in :data:`SCHEMA`, values checked by :func:`build`), hooked into
``config.load`` by two lines. Every key also has a flag on ``cutover``/``rollback``.

::

    [cutover]
    caddy = "http://127.0.0.1:2019"   # Caddy's admin endpoint
    route = "/v1/*"                   # the path matcher of the route users reach v1 by
    proxy = "http://127.0.0.1:80"     # where users reach Caddy (default: the route's listener)
    v1_upstream = "127.0.0.1:8080"    # the address Caddy dials for v1 (default: [v1] url)
    v2_upstream = "127.0.0.1:8180"    # ... for v2 (default: [v2] url)
    webhook = "https://hooks.example/…"   # JSON POST of the announcement
    on_cutover = "mail -s cutover ops@example < /dev/stdin"
    watch = "30m"                     # watched promotion (also --watch)
    probe_rate = 2.0                  # probes per second through Caddy during the watch
    check_every = 10.0                # seconds between two checks (each logged)
    max_error_rate = 0.05             # v2 error share through the proxy that rolls back
    max_p95_ratio = 1.5               # v2 p95 / v1 p95 (probes) that rolls back ...
    min_p95_gap_ms = 50.0             # ... when v2's p95 is also this much above v1's
    min_probes = 10                   # probes per side before the two limits apply
    rollback_on_halt = true           # a no-match halt during the watch rolls back
    caddyfile = "/etc/caddy/Caddyfile"    # also rewrite the Caddyfile (also --caddyfile)
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlsplit

import msgspec

_NUM = ((int, float), "a number")
_STR = ((str,), "a string")
SCHEMA: dict[str, tuple[tuple[type, ...], str]] = {
    "caddy": _STR, "route": _STR, "proxy": _STR, "v1_upstream": _STR, "v2_upstream": _STR,
    "webhook": _STR, "on_cutover": _STR, "announce_timeout": _NUM,
    "watch": ((int, float, str), "a duration"), "probe_rate": _NUM, "check_every": _NUM,
    "max_error_rate": _NUM, "max_p95_ratio": _NUM, "min_p95_gap_ms": _NUM,
    "min_probes": ((int,), "an integer"),
    "rollback_on_halt": ((bool,), "true or false"), "probe_timeout": _NUM, "caddyfile": _STR,
}

DEFAULT_ADMIN = "http://127.0.0.1:2019"


class CutoverConfig(msgspec.Struct, frozen=True):
    """``[cutover]``; ``None`` upstreams mean "the host:port of [v1]/[v2] url"."""

    caddy: str = DEFAULT_ADMIN
    route: str = "/v1/*"
    proxy: str | None = None
    v1_upstream: str | None = None
    v2_upstream: str | None = None
    webhook: str | None = None
    on_cutover: str | None = None
    announce_timeout: float = 10.0
    watch: float | None = None
    probe_rate: float = 2.0
    check_every: float = 10.0
    max_error_rate: float = 0.05
    max_p95_ratio: float = 1.5
    min_p95_gap_ms: float = 50.0
    min_probes: int = 10
    rollback_on_halt: bool = True
    probe_timeout: float = 10.0
    caddyfile: str | None = None

    @property
    def prefix(self) -> str:
        """``/v1/*`` → ``/v1/``."""
        return self.route[:-1]

    @property
    def legacy_route(self) -> str:
        """``/v1/*`` → ``/v1-legacy/*``."""
        return self.route[:-2] + "-legacy/*"

    @property
    def legacy_prefix(self) -> str:
        return self.legacy_route[:-1]


def check_route(route: str, where: str = "cutover.route") -> str:
    """A path matcher of the form ``/NAME/*`` (one segment, no Caddy placeholders)."""
    seg = route[1:-2] if route.startswith("/") and route.endswith("/*") else ""
    if not seg or any(c in seg for c in "/*{}?# \t\\"):
        raise ValueError(f"{where} must look like /v1/* (one path segment), got {route!r}")
    return route


def check_upstream(value: str, where: str) -> str:
    """A Caddy dial address ``host:port`` (no scheme, no path)."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port or "/" in value or any(c.isspace() for c in value):
        raise ValueError(f"{where} must be a dial address like 127.0.0.1:8080, got {value!r}")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{where}: the port must be 1..65535, got {value!r}")
    return value


def _url(name: str, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{name} must be an http:// or https:// URL, got {url!r}")


def _positive(name: str, value: float) -> None:
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")


def build(raw: dict[str, Any]) -> CutoverConfig:
    """The section's values (types already checked against :data:`SCHEMA`); ValueError."""
    raw = dict(raw)
    if "watch" in raw:
        from shadow_burnin.config import parse_duration

        raw["watch"] = parse_duration(raw["watch"], "cutover.watch")
    for key in ("announce_timeout", "probe_rate", "check_every", "max_error_rate",
                "max_p95_ratio", "min_p95_gap_ms", "probe_timeout"):
        if key in raw:
            raw[key] = float(raw[key])
    cfg = CutoverConfig(**raw)
    _url("cutover.caddy", cfg.caddy)
    check_route(cfg.route)
    if cfg.proxy is not None:
        _url("cutover.proxy", cfg.proxy)
    if cfg.webhook is not None:
        _url("cutover.webhook", cfg.webhook)
    for side in ("v1", "v2"):
        value = getattr(cfg, f"{side}_upstream")
        if value is not None:
            check_upstream(value, f"cutover.{side}_upstream")
    for key in ("announce_timeout", "probe_rate", "check_every", "max_p95_ratio",
                "probe_timeout"):
        _positive(f"cutover.{key}", getattr(cfg, key))
    _positive("cutover.min_probes", cfg.min_probes)
    if not math.isfinite(cfg.min_p95_gap_ms) or cfg.min_p95_gap_ms < 0:
        raise ValueError(f"cutover.min_p95_gap_ms must be >= 0, got {cfg.min_p95_gap_ms}")
    if not 0 <= cfg.max_error_rate < 1:
        raise ValueError(f"cutover.max_error_rate must be in [0, 1), got {cfg.max_error_rate}")
    return cfg


def upstream_of(url: str) -> str:
    """``http://127.0.0.1:8080/x`` → ``127.0.0.1:8080`` (default port by scheme)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{port}"
