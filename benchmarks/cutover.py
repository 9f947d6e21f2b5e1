"""Cutover and rollback on a real Caddy (2.6) in front of two scripted servers.

Usage: python benchmarks/cutover.py [--repeat 11] [--flips 5] [--clients 4]
(from the repository root; Caddy is started on free loopback ports and always stopped).

Prints, next to the issue's targets (asserts nothing):
- time from `cutover` to verified (the config change, read-back and every check through
  the proxy), and the whole use case (gates judged from the log, snapshot, event):
  median / min / max of ``--repeat`` flips;
- time to a verified rollback (target < 2 s), same statistics;
- requests lost during a flip (target 0): ``--clients`` clients send without pause through
  Caddy's /v1/ while the route flips to v2 and back ``--flips`` times. Two kinds of client:
  the official ``openai`` client (keep-alive, replays a request whose reused connection
  closed before any answer) and a bare aiohttp keep-alive loop that never replays.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.io.proxy import flipkit as kit  # noqa: E402
from tests.io.proxy.caddyproc import dial, start_caddyfile  # noqa: E402
from tests.servers.scripted import ScriptedServer  # noqa: E402

from shadow_burnin import config as config_mod  # noqa: E402
from shadow_burnin.app import cutover as app  # noqa: E402


def quiet(_: str) -> None:
    pass


def stats(values: list[float]) -> str:
    return (f"median {statistics.median(values) * 1000:8.1f} ms   min "
            f"{min(values) * 1000:7.1f} ms   max {max(values) * 1000:7.1f} ms   (n={len(values)})")


async def timed_flips(cfg: config_mod.Config, repeat: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"verified": [], "use_case": [], "rollback": [],
                                   "rollback_use_case": []}
    log = Path(cfg.paths.log)
    for _ in range(repeat):
        t0 = time.perf_counter()
        res = await app.cutover(cfg, app.Options(), quiet)
        out["use_case"].append(time.perf_counter() - t0)
        assert res.code == 0, res.headline
        t0 = time.perf_counter()
        back = await app.rollback(cfg, reason="bench", by="bench", say=quiet)
        out["rollback_use_case"].append(time.perf_counter() - t0)
        assert back.code == 0, back.headline
        events = kit.read_events(log)
        cut = [e for e in events if e["event"] == "cutover"][-1]
        rb = [e for e in events if e["event"] == "rollback"][-1]
        out["verified"].append(cut["seconds_to_verified"])
        out["rollback"].append(rb["seconds_to_verified"])
    return out


async def lost_during_flips(cfg: config_mod.Config, proxy: str, flips: int, clients: int,
                            kind: str) -> dict[str, Any]:
    import httpx2
    import openai

    calls, attempts, failed, served = 0, 0, 0, {"v1": 0, "v2": 0}
    errors: dict[str, int] = {}
    done = asyncio.Event()

    async def hook(_: Any) -> None:
        nonlocal attempts
        attempts += 1

    def note(text: str, err: str) -> None:
        nonlocal failed
        failed += 1
        errors[err] = errors.get(err, 0) + 1

    async def openai_client() -> None:
        nonlocal calls
        async with httpx2.AsyncClient(event_hooks={"request": [hook]}) as http:
            oa = openai.AsyncOpenAI(base_url=proxy + "/v1", api_key="none", http_client=http)
            while not done.is_set():
                calls += 1
                try:
                    r = await oa.chat.completions.create(
                        model="m", max_tokens=32, messages=[{"role": "user", "content": "x"}])
                    text = r.choices[0].message.content or ""
                    served["v2" if text.endswith(kit.SALT) else "v1"] += 1
                except openai.OpenAIError as exc:
                    note("", type(exc).__name__)

    async def bare_client() -> None:
        nonlocal calls, attempts
        body = orjson.dumps({"messages": [{"role": "user", "content": "x"}],
                             "max_tokens": 32})
        async with aiohttp.ClientSession() as s:
            while not done.is_set():
                calls += 1
                attempts += 1
                try:
                    async with s.post(proxy + "/v1/chat/completions", data=body,
                                      headers={"Content-Type": "application/json"}) as resp:
                        raw = await resp.read()
                        if resp.status != 200:
                            note("", f"HTTP {resp.status}")
                            continue
                        text = orjson.loads(raw)["choices"][0]["message"]["content"]
                        served["v2" if text.endswith(kit.SALT) else "v1"] += 1
                except aiohttp.ClientError as exc:
                    note("", type(exc).__name__)

    async def wait_served(side: str, n: int) -> None:
        target = served[side] + n
        for _ in range(500):
            if served[side] >= target:
                return
            await asyncio.sleep(0.01)

    make = openai_client if kind == "openai" else bare_client
    tasks = [asyncio.create_task(make()) for _ in range(clients)]
    await wait_served("v1", 20)
    for _ in range(flips):
        assert (await app.cutover(cfg, app.Options(), quiet)).code == 0
        await wait_served("v2", 20)
        assert (await app.rollback(cfg, reason="bench", by=None, say=quiet)).code == 0
        await wait_served("v1", 20)
    done.set()
    await asyncio.gather(*tasks)
    return {"calls": calls, "failed": failed, "replays": attempts - calls, "errors": errors,
            "served": served}


async def main(args: argparse.Namespace) -> None:
    v1 = ScriptedServer(record=False)
    v2 = ScriptedServer(record=False, diverge_after=0, salt=kit.SALT)
    await v1.start()
    await v2.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp)
            (d / "caddy").mkdir()
            with start_caddyfile(d / "caddy", dial(v1.url)) as caddy:
                log = kit.write_log(d / "burnin.jsonl")
                prompts = kit.write_prompts(d / "prompts.jsonl")
                cfg = config_mod.load(kit.write_config(
                    d / "c.toml", v1=v1.url, v2=v2.url, log=log, prompts=prompts,
                    admin=caddy.admin_url))
                t = await timed_flips(cfg, args.repeat)
                print(f"Caddy {caddy.admin_url}, Caddyfile-started; scripted v1/v2; "
                      f"{args.repeat} cutover + rollback pairs, no load")
                print(f"  cutover → verified (change + checks)      {stats(t['verified'])}")
                print(f"  cutover use case (gates, snapshot, event) {stats(t['use_case'])}")
                print(f"  rollback → verified          target < 2 s  {stats(t['rollback'])}")
                print(f"  rollback use case                          "
                      f"{stats(t['rollback_use_case'])}")
                for kind in ("openai", "bare"):
                    r = await lost_during_flips(cfg, caddy.proxy_url, args.flips, args.clients,
                                                kind)
                    print(f"  {kind:6s} x{args.clients}: {r['calls']:6d} requests during "
                          f"{args.flips} cutover+rollback pairs, lost {r['failed']} "
                          f"(target 0), replayed {r['replays']}, served {r['served']}, "
                          f"errors {r['errors'] or '-'}")
    finally:
        await v1.stop()
        await v2.stop()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=11)
    p.add_argument("--flips", type=int, default=5)
    p.add_argument("--clients", type=int, default=4)
    asyncio.run(main(p.parse_args()))
