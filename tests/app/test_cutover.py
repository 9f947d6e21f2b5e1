"""cutover / rollback / watched promotion against a real Caddy (2.6, started by the test on
free loopback ports) in front of two scripted servers that answer differently."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from shadow_burnin import config as config_mod
from shadow_burnin.app import cutover as app
from shadow_burnin.errors import ProxyError
from shadow_burnin.io.proxy.caddy import UPSTREAM_HEADER, CaddyAdmin, Snapshot, config_digest
from tests.io.proxy import flipkit as kit
from tests.io.proxy.caddyproc import CaddyProcess, dial, free_port, start_caddyfile, start_json
from tests.servers.scripted import ScriptedServer


@pytest.fixture
async def pair(scripted_server: Callable[..., Any]) -> tuple[ScriptedServer, ScriptedServer]:
    v1 = await scripted_server()
    v2 = await scripted_server(diverge_after=0, salt=kit.SALT)
    return v1, v2


@pytest.fixture(params=["caddyfile", "json"])
def caddy(request: pytest.FixtureRequest, tmp_path: Path,
          pair: tuple[ScriptedServer, ScriptedServer]) -> Iterator[CaddyProcess]:
    starter = start_caddyfile if request.param == "caddyfile" else start_json
    (tmp_path / "caddy").mkdir()
    with starter(tmp_path / "caddy", dial(pair[0].url)) as c:
        yield c


@pytest.fixture
def caddy_cf(tmp_path: Path, pair: tuple[ScriptedServer, ScriptedServer]
             ) -> Iterator[CaddyProcess]:
    (tmp_path / "caddy").mkdir()
    with start_caddyfile(tmp_path / "caddy", dial(pair[0].url)) as c:
        yield c


def make_cfg(tmp_path: Path, pair: tuple[ScriptedServer, ScriptedServer], admin: str, *,
             log_kw: dict[str, Any] | None = None, cut: dict[str, Any] | None = None
             ) -> config_mod.Config:
    log = kit.write_log(tmp_path / "burnin.jsonl", **(log_kw or {}))
    prompts = kit.write_prompts(tmp_path / "prompts.jsonl")
    path = kit.write_config(tmp_path / "c.toml", v1=pair[0].url, v2=pair[1].url, log=log,
                            prompts=prompts, admin=admin, cutover=cut)
    return config_mod.load(path)


class Said:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)


async def ask(proxy: str, path: str, prompt: str = "hello there") -> tuple[int, str, str | None]:
    """One chat completion through Caddy: (status, text, upstream header)."""
    body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": 16}
    async with aiohttp.ClientSession() as s, s.post(proxy + path, json=body) as resp:
        raw = await resp.read()
        text = orjson.loads(raw)["choices"][0]["message"]["content"] if resp.status == 200 \
            else raw.decode(errors="replace")
        return resp.status, text, resp.headers.get(UPSTREAM_HEADER)


def live_digest(c: CaddyProcess) -> str:
    return config_digest(c.live_config())


def snapshots(tmp_path: Path) -> list[Path]:
    return sorted(tmp_path.glob("burnin.jsonl.caddy-before-*.json"))


# -- the main path ------------------------------------------------------------------


async def test_green_cutover_then_rollback(tmp_path: Path, pair: Any, caddy: CaddyProcess
                                           ) -> None:
    v1, v2 = pair
    before = caddy.live_config()
    cfg = make_cfg(tmp_path, pair, caddy.admin_url)
    said = Said()
    res = await app.cutover(cfg, app.Options(), said)
    assert res.code == 0, (res.headline, [c.to_json() for c in res.checks])
    # through Caddy: /v1/… is v2, /v1-legacy/… is v1 (reached as /v1/…)
    status, text, up = await ask(caddy.proxy_url, "/v1/chat/completions")
    assert (status, up) == (200, dial(v2.url)) and text.endswith(kit.SALT)
    n1 = v1.count
    status, text, up = await ask(caddy.proxy_url, "/v1-legacy/chat/completions")
    assert (status, up) == (200, dial(v1.url)) and not text.endswith(kit.SALT)
    assert v1.count == n1 + 1 and v1.requests[-1].path == "/v1/chat/completions"
    # the prompt the log shows they answer differently was used to verify
    names = [c.name for c in res.checks]
    assert any(n.startswith(f"prompt {kit.TELL_ID}") for n in names), names
    # the saved config is the config before, beside the log
    [snap] = snapshots(tmp_path)
    assert config_digest(orjson.loads(snap.read_bytes())) == config_digest(before)
    events = kit.read_events(cfg_log(cfg))
    [cut] = [e for e in events if e["event"] == "cutover"]
    assert cut["verified"] is True and cut["forced"] is False
    assert cut["config_before"] == config_digest(before)
    assert cut["config_after"] == live_digest(caddy)
    assert cut["gates"]["verdict"] == "pass"

    back = await app.rollback(cfg, reason="test", by="me", say=said)
    assert back.code == 0, back.headline
    status, text, up = await ask(caddy.proxy_url, "/v1/chat/completions")
    assert status == 200 and not text.endswith(kit.SALT)
    assert live_digest(caddy) == config_digest(before)  # the whole saved config is back
    rb = kit.read_events(cfg_log(cfg))[-1]
    assert (rb["event"], rb["mode"], rb["verified"], rb["reason"]) == \
        ("rollback", "restore", True, "test")


def cfg_log(cfg: config_mod.Config) -> Path:
    return Path(cfg.paths.log)


async def test_red_gates_change_nothing(tmp_path: Path, pair: Any, caddy_cf: CaddyProcess
                                        ) -> None:
    before = live_digest(caddy_cf)
    cfg = make_cfg(tmp_path, pair, caddy_cf.admin_url, log_kw={"no_match": 20})
    res = await app.cutover(cfg, app.Options(), Said())
    assert res.code == 1 and res.evidence is not None
    assert res.evidence.report.verdict == "fail"
    assert live_digest(caddy_cf) == before
    assert snapshots(tmp_path) == [] and kit.read_events(cfg_log(cfg)) == []
    status, text, _ = await ask(caddy_cf.proxy_url, "/v1/chat/completions")
    assert status == 200 and not text.endswith(kit.SALT)


async def test_forced_cutover_logs_who_and_why(tmp_path: Path, pair: Any,
                                               caddy_cf: CaddyProcess) -> None:
    cfg = make_cfg(tmp_path, pair, caddy_cf.admin_url, log_kw={"no_match": 20})
    with pytest.raises(Exception, match="--reason"):
        await app.cutover(cfg, app.Options(force=True), Said())
    res = await app.cutover(cfg, app.Options(force=True, reason="CTO said so", by="ana"),
                            Said())
    assert res.code == 0, res.headline
    [cut] = kit.read_events(cfg_log(cfg))
    assert (cut["forced"], cut["reason"], cut["by"]) == (True, "CTO said so", "ana")
    assert cut["gates"]["verdict"] == "fail"


async def test_second_cutover_is_a_no_op(tmp_path: Path, pair: Any, caddy_cf: CaddyProcess
                                         ) -> None:
    cfg = make_cfg(tmp_path, pair, caddy_cf.admin_url)
    assert (await app.cutover(cfg, app.Options(), Said())).code == 0
    digest = live_digest(caddy_cf)
    again = await app.cutover(cfg, app.Options(), Said())
    assert again.code == 0 and "already" in again.headline
    assert live_digest(caddy_cf) == digest
    assert len([e for e in kit.read_events(cfg_log(cfg)) if e["event"] == "cutover"]) == 1
    # and a second rollback too
    assert (await app.rollback(cfg, reason=None, by=None, say=Said())).code == 0
    twice = await app.rollback(cfg, reason=None, by=None, say=Said())
    assert twice.code == 0 and "already on v1" in twice.headline


async def test_dry_run_shows_the_routes_diff_and_changes_nothing(
        tmp_path: Path, pair: Any, caddy_cf: CaddyProcess) -> None:
    before = live_digest(caddy_cf)
    cfg = make_cfg(tmp_path, pair, caddy_cf.admin_url)
    res = await app.cutover(cfg, app.Options(dry_run=True), Said())
    assert res.code == 0 and res.diff is not None
    added = [ln for ln in res.diff.splitlines() if ln.startswith("+")]
    assert any("/v1-legacy/*" in ln for ln in added)
    assert any(dial(pair[1].url) in ln for ln in added)
    assert any(ln.startswith("-") and dial(pair[0].url) in ln
               for ln in res.diff.splitlines()[2:])
    assert live_digest(caddy_cf) == before and snapshots(tmp_path) == []


async def test_rollback_repoints_when_the_config_changed_since(
        tmp_path: Path, pair: Any, caddy_cf: CaddyProcess) -> None:
    cfg = make_cfg(tmp_path, pair, caddy_cf.admin_url)
    assert (await app.cutover(cfg, app.Options(), Said())).code == 0
    # someone adds a route after the cutover: the saved config must not wipe it out
    admin = CaddyAdmin(caddy_cf.admin_url)
    snap = await admin.get_config()
    changed = orjson.loads(orjson.dumps(snap.config))
    routes = changed["apps"]["http"]["servers"]["srv0"]["routes"]
    routes.insert(0, {"match": [{"path": ["/health"]}],
                      "handle": [{"handler": "static_response", "body": "ok"}]})
    await admin.replace_config(changed, snap)
    res = await app.rollback(cfg, reason="r", by=None, say=Said())
    assert res.code == 0, res.headline
    assert kit.read_events(cfg_log(cfg))[-1]["mode"] == "repoint"
    live = caddy_cf.live_config()
    paths = [r.get("match", [{}])[0].get("path") for r in
             live["apps"]["http"]["servers"]["srv0"]["routes"]]
    assert ["/health"] in paths and ["/v1-legacy/*"] not in paths
    status, text, up = await ask(caddy_cf.proxy_url, "/v1/chat/completions")
    assert (status, up) == (200, dial(pair[0].url)) and not text.endswith(kit.SALT)


# -- faults: one line, exit 2, Caddy unchanged ------------------------------------------


async def _refused(cfg: config_mod.Config, match: str) -> None:
    with pytest.raises(ProxyError, match=match) as info:
        await app.cutover(cfg, app.Options(), Said())
    assert "\n" not in str(info.value) and info.value.exit_code == 2


async def test_admin_unreachable(tmp_path: Path, pair: Any) -> None:
    cfg = make_cfg(tmp_path, pair, f"http://127.0.0.1:{free_port()}")
    await _refused(cfg, "unreachable")
    assert snapshots(tmp_path) == []


async def test_admin_off(tmp_path: Path, pair: Any) -> None:
    (tmp_path / "caddy").mkdir()
    with start_caddyfile(tmp_path / "caddy", dial(pair[0].url), admin_off=True) as c:
        cfg = make_cfg(tmp_path, pair, f"http://127.0.0.1:{free_port()}")
        await _refused(cfg, "admin off")
        status, text, _ = await ask(c.proxy_url, "/v1/chat/completions")
        assert status == 200 and not text.endswith(kit.SALT)


async def test_admin_answers_an_error(tmp_path: Path, pair: Any, caddy_cf: CaddyProcess
                                      ) -> None:
    cfg = make_cfg(tmp_path, pair, caddy_cf.admin_url + "/not-the-admin-api")
    await _refused(cfg, "HTTP 404")


async def test_route_missing_names_what_was_found(tmp_path: Path, pair: Any,
                                                  caddy_cf: CaddyProcess) -> None:
    before = live_digest(caddy_cf)
    cfg = make_cfg(tmp_path, pair, caddy_cf.admin_url, cut={"route": "/v9/*"})
    await _refused(cfg, r"no route matches /v9/\*.*found: /v1/\* → " + dial(pair[0].url))
    assert live_digest(caddy_cf) == before


async def test_route_ambiguous(tmp_path: Path, pair: Any) -> None:
    (tmp_path / "caddy").mkdir()
    with start_json(tmp_path / "caddy", dial(pair[0].url), second_v1_route=True) as c:
        before = live_digest(c)
        cfg = make_cfg(tmp_path, pair, c.admin_url)
        await _refused(cfg, r"ambiguous: 2 routes match /v1/\*")
        assert live_digest(c) == before


async def test_route_points_somewhere_unexpected(tmp_path: Path, pair: Any,
                                                 caddy_cf: CaddyProcess) -> None:
    cfg = make_cfg(tmp_path, pair, caddy_cf.admin_url, cut={"v1_upstream": "10.9.9.9:80"})
    await _refused(cfg, r"points at " + dial(pair[0].url) + r", neither v1 \(10.9.9.9:80\)")


async def test_caddy_rejects_the_new_config(tmp_path: Path, pair: Any,
                                            caddy_cf: CaddyProcess,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Caddy 2.6 accepts any dial string, so the edit is spoiled with a handler module
    Caddy does not have: the refusal is real Caddy's."""
    plan = app.plan_cutover

    def spoiled(*args: Any, **kwargs: Any) -> dict[str, Any]:
        new = plan(*args, **kwargs)
        new["apps"]["http"]["servers"]["srv0"]["routes"][0]["handle"].insert(
            0, {"handler": "no_such_module"})
        return new

    monkeypatch.setattr(app, "plan_cutover", spoiled)
    before = live_digest(caddy_cf)
    cfg = make_cfg(tmp_path, pair, caddy_cf.admin_url)
    await _refused(cfg, "Caddy rejected the new config.*no_such_module")
    assert live_digest(caddy_cf) == before
    status, text, _ = await ask(caddy_cf.proxy_url, "/v1/chat/completions")
    assert status == 200 and not text.endswith(kit.SALT)


class _EditsInBetween(CaddyAdmin):
    """Someone else changes the config right after our read (a real concurrent PATCH)."""

    drop_etag = False

    async def get_config(self) -> Snapshot:
        snap = await super().get_config()
        if not getattr(self, "_done", False):
            self._done = True
            other = orjson.loads(orjson.dumps(snap.config))
            other["apps"]["http"]["servers"]["srv0"]["routes"].insert(
                0, {"match": [{"path": ["/someone-else"]}],
                    "handle": [{"handler": "static_response", "body": "x"}]})
            status, body, _ = await self._request("PATCH", "/config/", orjson.dumps(other),
                                                  [("Content-Type", "application/json")])
            assert status == 200, body
            if self.drop_etag:
                return Snapshot(snap.config, None)
        return snap


class _NoEtag(_EditsInBetween):
    drop_etag = True


@pytest.mark.parametrize("admin_cls", [_EditsInBetween, _NoEtag], ids=["if-match", "digest"])
async def test_concurrent_change_between_read_and_write(
        tmp_path: Path, pair: Any, caddy_cf: CaddyProcess, monkeypatch: pytest.MonkeyPatch,
        admin_cls: type[CaddyAdmin]) -> None:
    monkeypatch.setattr(app, "CaddyAdmin", admin_cls)
    cfg = make_cfg(tmp_path, pair, caddy_cf.admin_url)
    await _refused(cfg, "changed between our read and our write")
    live = caddy_cf.live_config()
    routes = live["apps"]["http"]["servers"]["srv0"]["routes"]
    assert routes[0]["match"] == [{"path": ["/someone-else"]}]  # theirs kept
    assert all(r.get("match") != [{"path": ["/v1-legacy/*"]}] for r in routes)  # ours not


async def test_v2_down_at_verification_rolls_back(tmp_path: Path, pair: Any,
                                                  caddy: CaddyProcess) -> None:
    before = live_digest(caddy)
    cfg = make_cfg(tmp_path, pair, caddy.admin_url)
    await pair[1].set_fault("refuse")
    res = await app.cutover(cfg, app.Options(), Said())
    assert res.code == 4, res.headline
    assert live_digest(caddy) == before
    events = kit.read_events(cfg_log(cfg))
    assert [(e["event"], e["verified"]) for e in events] == [("cutover", False),
                                                             ("rollback", True)]
    status, text, _ = await ask(caddy.proxy_url, "/v1/chat/completions")
    assert status == 200 and not text.endswith(kit.SALT)


async def test_restore_unverifiable_is_exit_5(tmp_path: Path, pair: Any,
                                              caddy_cf: CaddyProcess) -> None:
    cfg = make_cfg(tmp_path, pair, caddy_cf.admin_url)
    await pair[1].set_fault("refuse")
    await pair[0].set_fault("refuse")  # v1 down too: nothing can be verified
    res = await app.cutover(cfg, app.Options(), Said())
    assert res.code == 5 and res.unknown
    assert "UNKNOWN" in res.headline
    assert any("/load" in line for line in res.lines)  # says what to run


# -- zero failed requests during cutover and rollback --------------------------------


async def test_no_request_fails_during_cutover_and_rollback(
        tmp_path: Path, pair: Any, caddy: CaddyProcess) -> None:
    """Four official ``openai`` clients (keep-alive, default retries) send through Caddy
    without pause while the route flips to v2 and back: none of their requests fails.

    Caddy closes its idle keep-alive connections at every config load; a request written
    on one at that instant never reached a handler (Go's server only closes connections
    that have not started a request), and the client replays it on a fresh connection.
    ``attempts - calls`` counts those replays."""
    import httpx2 as httpx
    import openai

    cfg = make_cfg(tmp_path, pair, caddy.admin_url)
    calls, attempts, failures = 0, 0, []
    seen = {"v1": 0, "v2": 0}
    done = asyncio.Event()

    async def count(_request: httpx.Request) -> None:
        nonlocal attempts
        attempts += 1

    async def client(n_max: int) -> None:
        nonlocal calls
        async with httpx.AsyncClient(event_hooks={"request": [count]}) as http:
            oa = openai.AsyncOpenAI(base_url=caddy.proxy_url + "/v1", api_key="none",
                                    http_client=http)
            while calls < n_max and not done.is_set():
                calls += 1
                try:
                    r = await oa.chat.completions.create(
                        model="any", max_tokens=32,
                        messages=[{"role": "user", "content": "steady"}])
                    text = r.choices[0].message.content or ""
                    seen["v2" if text.endswith(kit.SALT) else "v1"] += 1
                except openai.OpenAIError as exc:
                    failures.append(repr(exc))

    async def flips() -> None:
        for _ in range(50):  # bounded: until the clients are under way
            if calls >= 8:
                break
            await asyncio.sleep(0.02)
        res = await app.cutover(cfg, app.Options(), Said())
        assert res.code == 0, res.headline
        for _ in range(200):  # bounded: until the clients are served by v2
            if seen["v2"] >= 8:
                break
            await asyncio.sleep(0.02)
        mark = seen["v1"]
        back = await app.rollback(cfg, reason="r", by=None, say=Said())
        assert back.code == 0, back.headline
        for _ in range(200):  # ... and by v1 again
            if seen["v1"] >= mark + 8:
                break
            await asyncio.sleep(0.02)
        done.set()

    clients = [asyncio.create_task(client(5000)) for _ in range(4)]
    await flips()
    await asyncio.gather(*clients)
    assert failures == [] and calls > 0
    assert seen["v1"] > 0 and seen["v2"] > 0, seen  # the flips happened under load
    assert attempts >= calls and sum(seen.values()) == calls


# -- the watched promotion --------------------------------------------------------------


async def test_watch_stays_when_v2_is_healthy(tmp_path: Path, pair: Any,
                                              caddy_cf: CaddyProcess) -> None:
    cfg = make_cfg(tmp_path, pair, caddy_cf.admin_url,
                   cut={"probe_rate": 20.0, "check_every": 0.5, "min_probes": 3})
    res = await app.cutover(cfg, app.Options(watch=2.0), Said())
    assert res.code == 0, res.headline
    checks = [e for e in kit.read_events(cfg_log(cfg)) if e["event"] == "cutover-check"]
    assert len(checks) >= 2 and checks[-1]["decision"] == "promoted"
    assert all(e["decision"] != "rollback" for e in checks)
    assert checks[-1]["figures"]["v2"]["probes"] >= 3
    status, text, _ = await ask(caddy_cf.proxy_url, "/v1/chat/completions")
    assert status == 200 and text.endswith(kit.SALT)


async def test_watch_rolls_back_by_itself_when_v2_fails(tmp_path: Path, pair: Any,
                                                        caddy: CaddyProcess) -> None:
    cfg = make_cfg(tmp_path, pair, caddy.admin_url,
                   cut={"probe_rate": 20.0, "check_every": 0.3, "min_probes": 3,
                        "max_error_rate": 0.2})
    log = cfg_log(cfg)
    task = asyncio.create_task(app.cutover(cfg, app.Options(watch=600.0), Said()))
    for _ in range(400):  # bounded: until the first healthy check is logged
        if any(e["event"] == "cutover-check" for e in kit.read_events(log)) or task.done():
            break
        await asyncio.sleep(0.05)
    assert not task.done()
    await pair[1].set_fault("http-503")
    res = await asyncio.wait_for(task, 120)
    assert res.code == 4, res.headline
    events = kit.read_events(log)
    last_check = [e for e in events if e["event"] == "cutover-check"][-1]
    assert last_check["decision"] == "rollback"
    assert any("v2 error rate through the proxy" in r for r in last_check["reasons"])
    assert events[-1]["event"] == "rollback" and events[-1]["automatic"] is True
    status, text, _ = await ask(caddy.proxy_url, "/v1/chat/completions")
    assert status == 200 and not text.endswith(kit.SALT)


async def test_watch_rolls_back_when_v2_gets_slow(tmp_path: Path, pair: Any,
                                                  caddy_cf: CaddyProcess) -> None:
    cfg = make_cfg(tmp_path, pair, caddy_cf.admin_url,
                   cut={"probe_rate": 10.0, "check_every": 0.3, "min_probes": 3,
                        "max_p95_ratio": 2.0, "min_p95_gap_ms": 100.0})
    log = cfg_log(cfg)
    task = asyncio.create_task(app.cutover(cfg, app.Options(watch=600.0), Said()))
    for _ in range(400):
        if any(e["event"] == "cutover-check" for e in kit.read_events(log)) or task.done():
            break
        await asyncio.sleep(0.05)
    assert not task.done()
    pair[1].delay_ms = 400.0  # v2 answers, but slowly
    res = await asyncio.wait_for(task, 120)
    assert res.code == 4, res.headline
    last_check = [e for e in kit.read_events(log) if e["event"] == "cutover-check"][-1]
    assert last_check["decision"] == "rollback"
    assert any("p95" in r for r in last_check["reasons"]), last_check["reasons"]
    assert last_check["figures"]["v2"]["errors"] == 0


async def test_watch_rolls_back_on_a_halt_of_the_running_burn_in(
        tmp_path: Path, pair: Any, caddy_cf: CaddyProcess) -> None:
    from shadow_burnin.io.log.events import append_event

    cfg = make_cfg(tmp_path, pair, caddy_cf.admin_url,
                   cut={"probe_rate": 5.0, "check_every": 0.3, "min_probes": 3})
    log = cfg_log(cfg)
    task = asyncio.create_task(app.cutover(cfg, app.Options(watch=600.0), Said()))
    for _ in range(400):
        if any(e["event"] == "cutover-check" for e in kit.read_events(log)) or task.done():
            break
        await asyncio.sleep(0.05)
    append_event(log, {"kind": "event", "event": "halt", "ts": "2026-11-29T07:00:00.000Z",
                       "round": 99})
    res = await asyncio.wait_for(task, 120)
    assert res.code == 4 and "halt" in res.headline


# -- the Caddyfile on disk, secrets, announcements ------------------------------------


async def test_caddyfile_written_and_restored(tmp_path: Path, pair: Any,
                                              caddy_cf: CaddyProcess) -> None:
    from shadow_burnin.io.proxy.caddy import find_route
    from shadow_burnin.io.proxy.caddyfile import adapt

    cfg = make_cfg(tmp_path, pair, caddy_cf.admin_url)
    original = caddy_cf.path.read_text()
    res = await app.cutover(cfg, app.Options(caddyfile=caddy_cf.path), Said())
    assert res.code == 0 and res.caddyfile_diff
    backups = list(caddy_cf.path.parent.glob("Caddyfile.bak-*"))
    assert [b.read_text() for b in backups] == [original]
    adapted = adapt(caddy_cf.path.read_text(), caddy_cf.path)
    ref = find_route(adapted, "/v1/*")
    assert ref is not None and ref.upstreams == (dial(pair[1].url),)
    back = await app.rollback(cfg, reason=None, by=None, say=Said(), caddyfile=caddy_cf.path)
    assert back.code == 0
    assert caddy_cf.path.read_text() == original


async def test_caddyfile_started_warns_about_reload(tmp_path: Path, pair: Any,
                                                    caddy_cf: CaddyProcess) -> None:
    cfg = make_cfg(tmp_path, pair, caddy_cf.admin_url)
    res = await app.cutover(cfg, app.Options(), Said())
    assert res.code == 0
    assert any("reload caddy" in w and "handle /v1-legacy/*" in w for w in res.warnings)


async def test_bad_caddyfile_changes_nothing(tmp_path: Path, pair: Any,
                                             caddy_cf: CaddyProcess) -> None:
    before = live_digest(caddy_cf)
    other = tmp_path / "Other.caddyfile"
    other.write_text(":80 {\n\trespond 404\n}\n")
    cfg = make_cfg(tmp_path, pair, caddy_cf.admin_url)
    with pytest.raises(ProxyError, match="no `handle /v1/"):
        await app.cutover(cfg, app.Options(caddyfile=other), Said())
    assert live_digest(caddy_cf) == before and other.read_text() == ":80 {\n\trespond 404\n}\n"


async def test_no_secret_in_caddy_or_saved_files(tmp_path: Path, pair: Any,
                                                 caddy_cf: CaddyProcess,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-cutover-" + hashlib.sha256(b"x").hexdigest()[:20]
    monkeypatch.setenv("V2_TEST_KEY", secret)
    monkeypatch.setenv("V1_TEST_KEY", secret + "v1")
    cfg = make_cfg(tmp_path, pair, caddy_cf.admin_url)
    cfg = config_mod.load(cfg.source, {"v1": {"api_key_env": "V1_TEST_KEY"},
                                       "v2": {"api_key_env": "V2_TEST_KEY"}})
    res = await app.cutover(cfg, app.Options(caddyfile=caddy_cf.path), Said())
    assert res.code == 0, res.headline
    # the probes through the proxy did carry the key (the servers saw it) ...
    assert any(r.headers.get("Authorization") == f"Bearer {secret}" for r in pair[1].requests)
    # ... but nothing we wrote or Caddy holds does
    assert (await app.rollback(cfg, reason=None, by=None, say=Said())).code == 0
    blobs = [orjson.dumps(caddy_cf.live_config())]
    blobs += [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()
              and p.name != "caddy.log"]
    assert all(secret.encode() not in b for b in blobs)


async def test_announcement_by_command_and_failing_webhook(
        tmp_path: Path, pair: Any, caddy_cf: CaddyProcess) -> None:
    out = tmp_path / "announced.json"
    cfg = make_cfg(tmp_path, pair, caddy_cf.admin_url,
                   cut={"on_cutover": f"cat > {out}",
                        "webhook": f"http://127.0.0.1:{free_port()}/hook",
                        "announce_timeout": 5.0})
    res = await app.cutover(cfg, app.Options(), Said())
    assert res.code == 0, res.headline  # a failed announcement is never fatal
    body = orjson.loads(out.read_bytes())
    assert body["event"] == "cutover" and body["gates"]["verdict"] == "pass"
    assert body["figures"]["rounds"] == 42 and "cut over /v1/*" in body["text"]
    assert any("webhook failed" in w for w in res.warnings)
    [cut] = kit.read_events(cfg_log(cfg))
    assert {(a["channel"], a["ok"]) for a in cut["announced"]} == {("command", True),
                                                                   ("webhook", False)}
