"""Liveness alerts outside a run: ``status --alert`` (from cron) checks the log by the
one rule of ``core.liveness`` and sends what holds through the ``[halt]`` alert channel
(the same command/webhook and body as the watcher inside ``run``)."""

from __future__ import annotations

import asyncio
from typing import Any

from msgspec.structs import replace

from shadow_burnin.config import Config
from shadow_burnin.core.liveness import LivenessRule
from shadow_burnin.io.run.alerts import send_liveness


def rule_for(cfg: Config, stall_s: float | None = None) -> LivenessRule:
    """``[alerts]`` of the config, with ``stall`` replaced by a flag's value if given."""
    rule = cfg.alerts.rule()
    return rule if stall_s is None else replace(rule, stall_s=stall_s)


def send_alerts(cfg: Config, st: dict[str, Any]) -> list[tuple[str, str]]:
    """Send each alert of a ``status`` result; (alert kind, one line per channel:
    ``command: sent`` or what failed). No channel configured: one line that says so."""
    return asyncio.run(_send_all(cfg, st))


async def _send_all(cfg: Config, st: dict[str, Any]) -> list[tuple[str, str]]:
    h = cfg.halt
    context = {"log": st["log"], "rounds": st["rounds"],
               "last_round_ts": st["last_round_ts"]}
    out: list[tuple[str, str]] = []
    for alert in st["alerts"]:
        outcomes = await send_liveness(alert, context, command=h.on_halt, webhook=h.webhook,
                                       timeout_s=h.webhook_timeout)
        lines = [f"{o.channel}: {'sent' if o.ok else o.detail}" for o in outcomes]
        out += [(alert["kind"], line) for line in
                lines or ["no alert channel configured ([halt] on_halt / webhook)"]]
    return out
