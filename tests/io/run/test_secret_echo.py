"""Defect 4(a) end to end: a server that echoes the API key (in a 429's Retry-After, in an
error event, in its reply text) — the key reaches neither the log nor `recent`/`show`."""

from __future__ import annotations

from pathlib import Path

import orjson
from aiohttp import web

from shadow_burnin.core.prompt import Prompt
from shadow_burnin.io.http.client import Endpoint, RequestSpec
from shadow_burnin.io.log.store import Store
from shadow_burnin.io.run.runner import Runner, RunPlan
from shadow_burnin.render.progress import NullProgress
from tests.cli.conftest import invoke

KEY = "sk-prod-SECRET-51c0ffee"
PROMPTS = [Prompt(id=f"p{i}", category="c", prompt=f"q {i}") for i in range(3)]


async def test_echoed_key_reaches_neither_log_nor_output(tmp_path: Path) -> None:
    calls = {"n": 0}

    async def handler(request: web.Request) -> web.StreamResponse:
        if request.path == "/v1/models":
            return web.json_response({"data": [{"id": "m"}]})
        calls["n"] += 1
        auth = request.headers["Authorization"]
        mode = calls["n"] % 3
        if mode == 1:  # the case: Retry-After echoes the Authorization header
            return web.json_response({"error": "slow"}, status=429,
                                     headers={"Retry-After": auth})
        if mode == 2:
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            await resp.write(b"data: " + orjson.dumps({"error": {"message": auth}}) + b"\n\n")
            return resp
        return web.json_response({"choices": [{"text": f"hi {auth}", "finish_reason": "stop"}]})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    log = tmp_path / "k.jsonl"
    try:
        plan = RunPlan(v1=Endpoint(url, api_key=KEY), v2=Endpoint(url, api_key=KEY),
                       spec=RequestSpec(api="completions"), setup="s", seed=1, interval=0,
                       rounds=6)
        with Store(log, tmp_path / "k.state") as store:
            await Runner(plan, PROMPTS, store, NullProgress()).run()
    finally:
        await runner.cleanup()
    data = log.read_bytes()
    errors = [r[s]["error"] for r in map(orjson.loads, data.splitlines()) for s in ("v1", "v2")]
    assert "http-429" in errors and any(e and e.startswith("bad-shape: error event")
                                        for e in errors)
    assert KEY.encode() not in data and b"[redacted]" in data
    assert KEY[:12].encode() not in data  # not even the start of it (cut to 20 chars before)
    for args in (("recent", "-n", "6"), ("show", "1"), ("show", "2"), ("bench",)):
        res = invoke(*args, "--log", log)
        assert res.exit_code == 0, res.output
        assert KEY not in res.stdout + res.stderr
    assert not any(KEY.encode() in p.read_bytes() for p in tmp_path.iterdir() if p.is_file())

