"""The ``[mirror]`` config section: ``shadow-burnin mirror`` (the real-traffic proxy).

Kept apart from ``config``: ``config.load`` validates the key types against
:data:`MIRROR_SCHEMA` and calls :func:`build_mirror` for the values. v1/v2 URLs, models
and ``api_key_env`` come from ``[v1]``/``[v2]`` as everywhere else.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec

_INT = ((int,), "an integer")
_NUM = ((int, float), "a number")
_STR = ((str,), "a string")
_BOOL = ((bool,), "true or false")

MIRROR_SCHEMA: dict[str, tuple[tuple[type, ...], str]] = {
    "listen": _STR, "max_queue": _INT, "shadow_concurrency": _INT, "sample": _NUM,
    "timeout": _NUM, "max_body": _INT, "force_greedy_shadow": _BOOL, "keep_text": _BOOL,
    "capture": _STR, "trust_seed": _BOOL, "grace": _NUM, "v1_timeout": _NUM,
    "shadow_sched": _STR, "shadow_nice": _INT, "commit_every": _NUM,
}

SHADOW_SCHEDS = ("idle", "nice")  # SCHED_IDLE, or SCHED_OTHER at ``shadow_nice``


class MirrorConfig(msgspec.Struct, frozen=True):
    """``[mirror]``: where to listen, and the shadow's budget."""

    listen: str = "127.0.0.1:8090"
    max_queue: int = 1000  # shadow copies waiting for a slot; a full queue drops (counted)
    shadow_concurrency: int = 4  # shadow requests in flight at once
    sample: float = 1.0  # share of comparable requests copied to the shadow
    timeout: float = 120.0  # per shadow request, seconds
    v1_timeout: float = 600.0  # the primary may be silent this long (then 504 / reset)
    max_body: int = 4 * 1024 * 1024  # larger requests go to the primary only
    force_greedy_shadow: bool = False
    keep_text: bool = False
    capture: str | None = None
    trust_seed: bool = False  # temperature > 0 with a seed is comparable (both honour it)
    grace: float = 30.0  # SIGTERM: seconds to finish clients and drain the shadow queue
    # the shadow process's CPU scheduling (two-process mode): "idle" = SCHED_IDLE (it runs
    # only when the clients' process has nothing to run), "nice" = the normal policy at
    # ``shadow_nice`` (0-19, relative to the mirror's own niceness)
    shadow_sched: str = "idle"
    shadow_nice: int = 10
    # seconds between two group commits of the log, at least (a crash loses at most the
    # rounds of the last window; SIGTERM commits at once)
    commit_every: float = 1.0

    def host_port(self) -> tuple[str, int]:
        return split_listen(self.listen)


def split_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) → (host, port); ValueError if malformed."""
    host, sep, port = listen.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"mirror.listen must be HOST:PORT (e.g. 127.0.0.1:8090), "
                         f"got {listen!r}")
    return host, int(port)


def build_mirror(raw: dict[str, Any]) -> MirrorConfig:
    """The section's values, validated; ValueError naming the key otherwise."""
    values = dict(raw)
    for key in ("sample", "timeout", "grace", "v1_timeout", "commit_every"):
        if key in values:
            values[key] = float(values[key])
    cfg = MirrorConfig(**values)
    split_listen(cfg.listen)
    for name in ("max_queue", "shadow_concurrency", "max_body", "timeout", "v1_timeout"):
        value = getattr(cfg, name)
        if value <= 0 or not math.isfinite(value):
            raise ValueError(f"mirror.{name} must be positive, got {value}")
    if not 0.0 <= cfg.sample <= 1.0:
        raise ValueError(f"mirror.sample must be in [0, 1], got {cfg.sample}")
    if cfg.shadow_sched not in SHADOW_SCHEDS:
        raise ValueError(f"mirror.shadow_sched must be 'idle' or 'nice', got "
                         f"{cfg.shadow_sched[:20]!r}")
    if not 0 <= cfg.shadow_nice <= 19:
        raise ValueError(f"mirror.shadow_nice must be a niceness from 0 to 19, got "
                         f"{cfg.shadow_nice}")
    if not 0 <= cfg.commit_every <= 60:  # (NaN fails too)
        raise ValueError(f"mirror.commit_every must be from 0 to 60 seconds, got "
                         f"{cfg.commit_every}")
    if cfg.grace < 0 or not math.isfinite(cfg.grace):
        raise ValueError(f"mirror.grace must be >= 0, got {cfg.grace}")
    return cfg
