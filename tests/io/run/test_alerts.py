"""Halt alerts: the on_halt command and the webhook; failures are outcomes, never raised."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import orjson
import pytest
from aiohttp import web

from shadow_burnin.io.run.alerts import halt_message, payload, post_webhook, run_command, send_all

EVENT = {"kind": "event", "event": "halt", "ts": "2026-11-27T23:00:01.234Z", "round": 51,
         "action": "flag",
         "window": {"seconds": 3600.0, "parity_rounds": 51, "no_match": 11, "rate": 0.215686,
                    "threshold": 0.2},
         "worst_prompts": [{"prompt_id": "code-03", "category": "code", "no_match": 4,
                            "parity_rounds": 6}]}


class Receiver:
    """A local webhook receiver (aiohttp): records bodies, answers ``status``."""

    def __init__(self, status: int = 200, delay_s: float = 0.0) -> None:
        self.status, self.delay_s = status, delay_s
        self.bodies: list[dict] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.json())
        await asyncio.sleep(self.delay_s)
        return web.Response(status=self.status, text="ok")

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/hook"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


def test_halt_message() -> None:
    text = halt_message(EVENT)
    assert "round 51" in text and "21.6 %" in text and "11/51" in text
    assert "1 h" in text and "20 %" in text and "code-03 (4/6)" in text
    assert "30 min" in halt_message(dict(EVENT, window=dict(EVENT["window"], seconds=1800)))
    body = payload(EVENT, {"log": "/x.jsonl"})
    assert body["text"] == text and body["halt"]["round"] == 51 and body["log"] == "/x.jsonl"


async def test_command_gets_the_halt(tmp_path: Path) -> None:
    out = tmp_path / "got.json"
    env_out = tmp_path / "env.txt"
    cmd = f'cat > {out}; printf "%s" "$SHADOW_BURNIN_HALT_ROUND" > {env_out}'
    outcome = await run_command(cmd, payload(EVENT, {}), 5)
    assert outcome.ok and outcome.channel == "command"
    assert orjson.loads(out.read_bytes())["halt"]["round"] == 51
    assert env_out.read_text() == "51"


@pytest.mark.parametrize(("cmd", "detail"), [
    ("echo 'pager down' >&2; exit 4", "exit 4: pager down"),
    ("/nonexistent/notify", "exit 127"),
])
async def test_command_failures_are_outcomes(cmd: str, detail: str) -> None:
    outcome = await run_command(cmd, payload(EVENT, {}), 5)
    assert not outcome.ok and outcome.detail.startswith(detail)


async def test_command_is_killed_after_the_timeout() -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    outcome = await run_command(f"{sys.executable} -c 'import time; time.sleep(30)'",
                                payload(EVENT, {}), 0.5)
    assert not outcome.ok and "killed after 0.5 s" in outcome.detail
    assert loop.time() - start < 5


async def test_webhook_received() -> None:
    async with Receiver() as rx:
        outcome = await post_webhook(rx.url, payload(EVENT, {"v2": "http://b"}), 5)
    assert outcome.ok and len(rx.bodies) == 1
    assert rx.bodies[0]["halt"]["round"] == 51 and rx.bodies[0]["v2"] == "http://b"
    assert rx.bodies[0]["text"].startswith("shadow-burnin HALT at round 51")


async def test_webhook_failures_are_outcomes() -> None:
    async with Receiver(status=500) as rx:
        assert (await post_webhook(rx.url, {}, 5)).detail == "HTTP 500"
        url = rx.url
    refused = await post_webhook(url, {}, 5)  # the receiver is gone
    assert not refused.ok and "Connect" in refused.detail
    async with Receiver(delay_s=2) as slow:
        late = await post_webhook(slow.url, {}, 0.3)
    assert not late.ok and "no answer within 0.3 s" in late.detail
    bad = await post_webhook("http://[::1", {}, 1)
    assert not bad.ok


async def test_send_all(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    async with Receiver() as rx:
        outcomes = await send_all(EVENT, {}, command=f"touch {marker}", webhook=rx.url,
                                  timeout_s=5)
    assert [(o.channel, o.ok) for o in outcomes] == [("command", True), ("webhook", True)]
    assert marker.exists() and json.dumps(rx.bodies[0]["halt"]["worst_prompts"])
    assert await send_all(EVENT, {}, command=None, webhook=None, timeout_s=1) == []
