"""Telling people about a halt: a shell command and/or a webhook POST.

Both run in the background of the event loop (never blocking the rounds) and neither
can stop the burn-in: every failure becomes a short message that the caller reports
(and logs as a ``halt-alert`` event). The command gets the halt as JSON on stdin and in
``SHADOW_BURNIN_HALT``; the webhook body is JSON with a ``text`` field (Slack-style
incoming webhooks show it as is) plus the whole halt event.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import msgspec
import orjson


class AlertOutcome(msgspec.Struct, frozen=True):
    channel: str  # "command" | "webhook"
    ok: bool
    detail: str = ""


def halt_message(event: Mapping[str, Any]) -> str:
    """One line a human reads first: what halted, when, and why."""
    w = event.get("window", {})
    on = "regression" if w.get("on") == "regression" else "no-match"
    key = on.replace("-", "_")
    worst = ", ".join(f"{p['prompt_id']} ({p.get(key)}/{p['parity_rounds']})"
                      for p in event.get("worst_prompts", [])[:3])
    rate = w.get("rate")
    share = "?" if not isinstance(rate, int | float) else f"{100 * rate:.1f} %"
    thr = w.get("threshold")
    thr_text = "?" if not isinstance(thr, int | float) else f"{100 * thr:g} %"
    return (f"shadow-burnin HALT at round {event.get('round')} ({event.get('ts')}): "
            f"{on} {share} ({w.get(key)}/{w.get('parity_rounds')} parity rounds) "
            f"in the last {_span(w.get('seconds'))}, above {thr_text}"
            + (f"; worst prompts: {worst}" if worst else ""))


def _span(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "window"
    if seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    return f"{seconds / 60:g} min" if seconds % 60 == 0 else f"{seconds:g} s"


def payload(event: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    return {"text": halt_message(event), "event": "halt", "halt": dict(event), **context}


def halt_env(body: Mapping[str, Any]) -> dict[str, str]:
    """The variables a halt command gets besides the JSON on stdin."""
    return {"SHADOW_BURNIN_HALT": orjson.dumps(body).decode(),
            "SHADOW_BURNIN_HALT_ROUND": str(body.get("halt", {}).get("round", ""))}


async def run_command(command: str, body: Mapping[str, Any], timeout_s: float,
                      env_for: Callable[[Mapping[str, Any]], dict[str, str]] = halt_env
                      ) -> AlertOutcome:
    """``sh -c command`` with the JSON on stdin and ``env_for(body)`` in its environment
    (default: the halt's variables); killed (whole group) after the timeout."""
    data = orjson.dumps(body)
    env = dict(os.environ, **env_for(body))
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


async def post_webhook(url: str, body: Mapping[str, Any], timeout_s: float) -> AlertOutcome:
    """POST the JSON body; any status outside 2xx or a network error is a failure."""
    try:
        async with asyncio.timeout(timeout_s), aiohttp.ClientSession() as session, \
                session.post(url, data=orjson.dumps(body),
                             headers={"Content-Type": "application/json"}) as resp:
            await resp.read()
            if not 200 <= resp.status < 300:
                return AlertOutcome("webhook", False, f"HTTP {resp.status}")
    except TimeoutError:
        return AlertOutcome("webhook", False, f"no answer within {timeout_s:g} s")
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        return AlertOutcome("webhook", False, f"{type(exc).__name__}: {exc}"[:200])
    return AlertOutcome("webhook", True)


async def send_all(event: Mapping[str, Any], context: Mapping[str, Any], *,
                   command: str | None, webhook: str | None, timeout_s: float
                   ) -> list[AlertOutcome]:
    """Every configured alert, concurrently; never raises for an alert's failure."""
    body = payload(event, context)
    jobs = []
    if command:
        jobs.append(run_command(command, body, timeout_s))
    if webhook:
        jobs.append(post_webhook(webhook, body, timeout_s))
    return list(await asyncio.gather(*jobs)) if jobs else []


def liveness_env(body: Mapping[str, Any]) -> dict[str, str]:
    """The variables a liveness alert's command gets besides the JSON on stdin."""
    return {"SHADOW_BURNIN_ALERT": orjson.dumps(body).decode(),
            "SHADOW_BURNIN_ALERT_KIND": str(body.get("event", ""))}


def liveness_body(alert: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """What a liveness alert sends: ``text`` first (Slack-style webhooks show it), the
    alert's kind as ``event``, the alert itself, and the run's context (log, URLs)."""
    return {"text": alert.get("text", ""), "event": alert.get("kind"), "alert": dict(alert),
            **context}


async def send_liveness(alert: Mapping[str, Any], context: Mapping[str, Any], *,
                        command: str | None, webhook: str | None, timeout_s: float
                        ) -> list[AlertOutcome]:
    """A liveness alert through the halt's channel (its command and/or webhook),
    concurrently; never raises for an alert's failure."""
    body = liveness_body(alert, context)
    jobs = []
    if command:
        jobs.append(run_command(command, body, timeout_s, env_for=liveness_env))
    if webhook:
        jobs.append(post_webhook(webhook, body, timeout_s))
    return list(await asyncio.gather(*jobs)) if jobs else []
