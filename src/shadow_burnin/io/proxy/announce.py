"""Announcing a cutover or a rollback: a webhook POST and/or a shell command, like the halt
alert (``io/run/alerts.py``, whose webhook POST is reused). Neither can fail the command:
every failure comes back as an :class:`~shadow_burnin.io.run.alerts.AlertOutcome` that the
caller logs. The command gets the announcement as JSON on stdin and in
``SHADOW_BURNIN_CUTOVER``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping
from typing import Any

import orjson

from shadow_burnin.io.run.alerts import AlertOutcome, post_webhook


async def run_command(command: str, body: Mapping[str, Any], timeout_s: float
                      ) -> AlertOutcome:
    """``sh -c command`` with the JSON on stdin; its process group killed after the timeout."""
    data = orjson.dumps(body)
    env = dict(os.environ, SHADOW_BURNIN_CUTOVER=data.decode(),
               SHADOW_BURNIN_EVENT=str(body.get("event", "")))
    try:
        proc = await asyncio.create_subprocess_shell(
            command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, env=env, start_new_session=True)
    except OSError as exc:
        return AlertOutcome("command", False, f"cannot start: {exc.strerror or exc}")
    try:
        _, err = await asyncio.wait_for(proc.communicate(data), timeout_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        return AlertOutcome("command", False, f"killed after {timeout_s:g} s")
    if proc.returncode != 0:
        tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] if err else []
        return AlertOutcome("command", False, f"exit {proc.returncode}"
                            + (f": {tail[0][:200]}" if tail else ""))
    return AlertOutcome("command", True)


async def announce(body: Mapping[str, Any], *, command: str | None, webhook: str | None,
                   timeout_s: float) -> list[AlertOutcome]:
    """Every configured channel, concurrently; never raises for a channel's failure."""
    jobs = []
    if command:
        jobs.append(run_command(command, body, timeout_s))
    if webhook:
        jobs.append(post_webhook(webhook, body, timeout_s))
    return list(await asyncio.gather(*jobs)) if jobs else []
