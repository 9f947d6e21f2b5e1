"""Announcing a cutover or a rollback: a webhook POST and/or a shell command, like the halt
alert (``io/run/alerts.py``, whose webhook POST is reused). Neither can fail the command:
every failure comes back as an :class:`~shadow_burnin.io.run.alerts.AlertOutcome` that the
caller logs. The command gets the announcement as JSON on stdin and in
``SHADOW_BURNIN_CUTOVER``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import orjson

from shadow_burnin.io.run.alerts import AlertOutcome, post_webhook, run_command


def cutover_env(body: Mapping[str, Any]) -> dict[str, str]:
    """The variables an ``on_cutover`` command gets besides the JSON on stdin."""
    return {"SHADOW_BURNIN_CUTOVER": orjson.dumps(body).decode(),
            "SHADOW_BURNIN_EVENT": str(body.get("event", ""))}


async def announce(body: Mapping[str, Any], *, command: str | None, webhook: str | None,
                   timeout_s: float) -> list[AlertOutcome]:
    """Every configured channel, concurrently; never raises for a channel's failure."""
    jobs = []
    if command:
        jobs.append(run_command(command, body, timeout_s, cutover_env))
    if webhook:
        jobs.append(post_webhook(webhook, body, timeout_s))
    return list(await asyncio.gather(*jobs)) if jobs else []
