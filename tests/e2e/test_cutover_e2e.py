"""Cutover and rollback with a real Caddy in front of the real pair (same weights, two
engines): a short burn-in, then `cutover` verified through the proxy, requests through
Caddy answered by v2 on /v1/… and by v1 on /v1-legacy/…, then `rollback`."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import orjson
import pytest

from shadow_burnin.cli.demo import write_demo_prompts
from shadow_burnin.io.proxy.caddy import UPSTREAM_HEADER
from tests.cli.conftest import invoke
from tests.io.proxy.caddyproc import dial, start_caddyfile

pytestmark = pytest.mark.e2e


def _post(url: str, prompt: str) -> tuple[int, str | None, dict]:
    body = orjson.dumps({"prompt": prompt, "max_tokens": 8, "temperature": 0})
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as resp:
        return resp.status, resp.headers.get(UPSTREAM_HEADER), orjson.loads(resp.read())


def test_cutover_and_rollback_on_the_real_pair(real_pair, tmp_path: Path) -> None:
    log = tmp_path / "real.jsonl"
    prompts = write_demo_prompts(tmp_path / "prompts.jsonl")
    (tmp_path / "caddy").mkdir()
    with start_caddyfile(tmp_path / "caddy", dial(real_pair.v1.url)) as caddy:
        config = tmp_path / "c.toml"
        config.write_text(
            f'[v1]\nurl = "{real_pair.v1.url}"\n[v2]\nurl = "{real_pair.v2.url}"\n'
            '[request]\napi = "completions"\nmax_tokens = 8\n'
            "[request.extra]\ncache_prompt = false\nrepeat_penalty = 1.0\n"
            f'[run]\nprompts = "{prompts}"\n[paths]\nlog = "{log}"\n'
            "[gates.ppl]\nenabled = false\n[gates.wall_time]\nenabled = false\n"
            "[gates.rounds]\ntarget = 4\n[gates.exact_match]\ntarget = 0.0\n"
            "[gates.prefix_match]\nenabled = false\n[gates.p95_gap]\ntarget = 100000.0\n"
            f'[cutover]\ncaddy = "{caddy.admin_url}"\n')
        r = invoke("run", "--config", config, "--rounds", "4", "--interval", "0",
                   "--logprobs", "0", "--refire", "0", "--aa-every", "0")
        assert r.exit_code == 0, r.output
        cut = invoke("cutover", "--config", config)
        assert cut.exit_code == 0, cut.output + cut.stderr
        status, up, _ = _post(caddy.proxy_url + "/v1/completions", "The capital of France is")
        assert (status, up) == (200, dial(real_pair.v2.url))
        status, up, _ = _post(caddy.proxy_url + "/v1-legacy/completions",
                              "The capital of France is")
        assert (status, up) == (200, dial(real_pair.v1.url))
        back = invoke("rollback", "--config", config, "--reason", "e2e")
        assert back.exit_code == 0, back.output + back.stderr
        status, up, _ = _post(caddy.proxy_url + "/v1/completions", "The capital of France is")
        assert status == 200 and up in (None, dial(real_pair.v1.url))
        events = [orjson.loads(x) for x in
                  (tmp_path / "real.jsonl.events.jsonl").read_bytes().splitlines()]
        kinds = [(e["event"], e.get("verified")) for e in events
                 if e["event"] in ("cutover", "rollback")]
        assert kinds == [("cutover", True), ("rollback", True)]
        # the figures the README reports for the real pair
        print(f"cutover verified in {events[0]['seconds_to_verified']:.3f} s, "
              f"rollback verified in {events[-1]['seconds_to_verified']:.3f} s")
