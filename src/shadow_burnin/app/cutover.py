"""Cutover, rollback and the watched promotion: gates → Caddy → verified through the proxy.

``cutover``: judge the gates exactly as ``gates`` does (``app.evidence``); find the route in
Caddy's live config; save that config beside the log; apply one guarded change (route →
v2, ``-legacy`` route → v1); verify through the proxy (which upstream Caddy dialled, and,
where the log has one, a prompt the two sides answer differently); restore and verify the
saved config if that fails; log a ``cutover`` event; announce; optionally watch.

``rollback``: the route back to v1 (the whole saved config only when the live config is
still exactly the one the cutover wrote), verified the same way, logged.

Exit codes (:data:`EXIT_CODES`): 0 done or already done, 1 gates red, 2 bad input or Caddy
unreachable/refusing (nothing changed), 3 gates waiting, 4 flipped then rolled back, 5
Caddy's state unknown.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import statistics
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import aiohttp
import msgspec
import orjson

from shadow_burnin.app.evidence import Evidence, gather
from shadow_burnin.config import Config
from shadow_burnin.config_cutover import CutoverConfig, upstream_of
from shadow_burnin.core.flip import (
    CHECK_EVENT,
    CUTOVER_EVENT,
    ROLLBACK_EVENT,
    TellApart,
    last_cutover,
    tell_apart,
)
from shadow_burnin.core.halt import halt_status
from shadow_burnin.core.prompt import Prompt
from shadow_burnin.errors import ConfigError, ProxyError, ShadowBurninError
from shadow_burnin.io.clock import now_iso
from shadow_burnin.io.http.client import Api, RequestSpec, build_body
from shadow_burnin.io.log.events import append_event, iter_event_file
from shadow_burnin.io.log.sidecars import CADDY_BEFORE, LogFiles, events_path, write_atomic
from shadow_burnin.io.proxy import caddyfile as cfile
from shadow_burnin.io.proxy.announce import announce
from shadow_burnin.io.proxy.caddy import (
    UPSTREAM_HEADER,
    CaddyAdmin,
    RouteRef,
    Snapshot,
    config_digest,
    find_route,
    list_routes,
    looks_adapted_from_caddyfile,
    plan_cutover,
    plan_rollback,
    proxy_base,
    routes_diff,
)

EXIT_DONE, EXIT_RED, EXIT_BAD, EXIT_WAITING, EXIT_ROLLED_BACK, EXIT_UNKNOWN = 0, 1, 2, 3, 4, 5
EXIT_CODES: tuple[tuple[int, str], ...] = (
    (0, "done, or already done (the watch, if any, ended green)"),
    (1, "gates red: nothing changed"),
    (2, "bad input, or Caddy unreachable / refusing / not as expected: nothing changed"),
    (3, "gates waiting (need more rounds or time): nothing changed"),
    (4, "flipped, then rolled back (verification failed, or the watch rolled back)"),
    (5, "Caddy's state is unknown: a restore could not be verified (see the message)"),
)
TELL_APART_BYTES = 8 * 1024 * 1024  # how much of the log's tail to look for such a prompt
VERIFY_TRIES = 3

Say = Callable[[str], None]


class Check(msgspec.Struct):
    """One check through the proxy."""

    name: str
    ok: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"check": self.name, "ok": self.ok, "detail": self.detail}


class Result(msgspec.Struct):
    code: int
    headline: str
    lines: list[str] = msgspec.field(default_factory=list)
    evidence: Evidence | None = None
    diff: str | None = None
    caddyfile_diff: str | None = None
    warnings: list[str] = msgspec.field(default_factory=list)
    checks: list[Check] = msgspec.field(default_factory=list)
    unknown: bool = False  # exit 5: say it loudly


class Options(msgspec.Struct, frozen=True):
    force: bool = False
    reason: str | None = None
    by: str | None = None
    dry_run: bool = False
    watch: float | None = None
    caddyfile: Path | None = None


class Target(msgspec.Struct):
    """Everything about the flip that comes from the config."""

    cfg: Config
    cut: CutoverConfig
    log: Path
    v1: str
    v2: str
    admin: CaddyAdmin

    @classmethod
    def of(cls, cfg: Config) -> Target:
        cut = cfg.cutover
        v1 = cut.v1_upstream or upstream_of(cfg.v1.url)
        v2 = cut.v2_upstream or upstream_of(cfg.v2.url)
        if v1 == v2:
            raise ConfigError(cfg.source, f"v1 and v2 are the same upstream ({v1}); set "
                              "[cutover] v1_upstream / v2_upstream")
        return cls(cfg, cut, Path(cfg.paths.log), v1, v2,
                   CaddyAdmin(cut.caddy, timeout=cut.probe_timeout))

    def tls(self, side: str) -> bool | None:
        """Whether Caddy must speak HTTPS to ``side`` (from its URL; None when the
        upstream address is configured apart and the transport is left as it is)."""
        if getattr(self.cut, f"{side}_upstream"):
            return None
        return str(getattr(self.cfg, side).url).startswith("https://")

    def base(self, ref: RouteRef) -> tuple[str, str | None]:
        if self.cut.proxy:
            return self.cut.proxy.rstrip("/"), None
        return proxy_base(ref)


def user() -> str | None:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return None


# -- locating the route -----------------------------------------------------------------


def locate(t: Target, config: dict[str, Any]) -> tuple[RouteRef, str, RouteRef | None]:
    """The route, which side it points at ("v1"/"v2"), and the legacy route if any;
    ProxyError (exit 2) naming what was found when it is missing or unexpected."""
    route = t.cut.route
    ref = find_route(config, route)
    if ref is None:
        raise ProxyError(f"no route matches {route} in Caddy's live config; found: "
                         f"{list_routes(config)}")
    legacy = find_route(config, t.cut.legacy_route)
    ups = set(ref.upstreams)
    if ups == {t.v1}:
        return ref, "v1", legacy
    if ups == {t.v2}:
        return ref, "v2", legacy
    raise ProxyError(f"{route} points at {', '.join(sorted(ups)) or 'no reverse_proxy'}, "
                     f"neither v1 ({t.v1}) nor v2 ({t.v2}); found: {list_routes(config)} "
                     "(set [cutover] v1_upstream/v2_upstream if Caddy reaches them by other "
                     "addresses)")


# -- checks through the proxy -----------------------------------------------------------


def _api_path(t: Target, prefix: str) -> str | None:
    """The completion path under ``prefix`` (``/v1/`` → ``/v1/chat/completions``)."""
    rel = {"chat": "chat/completions", "completions": "completions"}.get(t.cfg.request.api)
    if rel is None or t.cut.prefix != "/v1/":
        return None
    return prefix + rel


def _headers(host: str | None, key_env: str | None) -> dict[str, str]:
    h = {"Content-Type": "application/json"}
    if host:
        h["Host"] = host
    key = os.environ.get(key_env) if key_env else None
    if key:
        h["Authorization"] = f"Bearer {key}"
    return h


def _reply_text(api: str, data: Any) -> str | None:
    try:
        choice = data["choices"][0]
        text = choice["message"]["content"] if api == "chat" else choice["text"]
    except (KeyError, IndexError, TypeError):
        return None
    return text if isinstance(text, str) else None


class Prober:
    """Requests through Caddy, each on a fresh connection (what a new client sees)."""

    def __init__(self, t: Target, base: str, host: str | None) -> None:
        self.t, self.base, self.host = t, base, host
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Prober:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(force_close=True),
            timeout=aiohttp.ClientTimeout(total=self.t.cut.probe_timeout))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None
        return self._session

    async def upstream(self, prefix: str, side: str) -> tuple[int | None, str | None, str]:
        """``GET <prefix>models``: (status, the upstream header, error text)."""
        key_env = getattr(self.t.cfg, side).api_key_env
        try:
            async with self.session.get(self.base + prefix + "models",
                                        headers=_headers(self.host, key_env),
                                        allow_redirects=False) as resp:
                await resp.read()
                return resp.status, resp.headers.get(UPSTREAM_HEADER), ""
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            return None, None, f"{type(exc).__name__}: {exc}"[:200]

    async def complete(self, path: str, side: str, prompt: Prompt, max_tokens: int
                       ) -> tuple[bool, float, str | None, str]:
        """POST a completion: (ok, latency ms, text, error)."""
        req = self.t.cfg.request
        spec = RequestSpec(api=cast(Api, req.api), max_tokens=max_tokens, stream=False,
                           extra=dict(req.extra))
        sc = getattr(self.t.cfg, side)
        body = orjson.dumps(build_body(spec, prompt, sc.model))
        start = time.perf_counter()
        try:
            async with self.session.post(self.base + path, data=body,
                                         headers=_headers(self.host, sc.api_key_env),
                                         allow_redirects=False) as resp:
                raw = await resp.read()
                ms = 1000 * (time.perf_counter() - start)
                if resp.status != 200:
                    return False, ms, None, f"HTTP {resp.status}"
                text = _reply_text(req.api, orjson.loads(raw))
                if text is None:
                    return False, ms, None, "no text in the reply"
                return True, ms, text, ""
        except (aiohttp.ClientError, OSError, TimeoutError, orjson.JSONDecodeError) as exc:
            return False, 1000 * (time.perf_counter() - start), None, \
                f"{type(exc).__name__}: {exc}"[:200]


async def _dial_check(p: Prober, prefix: str, side: str, want: str, name: str) -> Check:
    detail = ""
    for attempt in range(VERIFY_TRIES):
        status, got, err = await p.upstream(prefix, side)
        if status is not None and status < 400 and got == want:
            return Check(name, True, f"HTTP {status}, Caddy dialled {got}")
        detail = err or f"HTTP {status}, Caddy dialled {got or '(no upstream header)'}"
        if attempt + 1 < VERIFY_TRIES:
            await asyncio.sleep(0.2)
    return Check(name, False, f"{detail}, expected {want}")


def _tail_records(log: Path, size: int) -> list[dict[str, Any]]:
    """The round records in the last ``size`` bytes of the log (whole lines only), so a
    long burn-in's log is not read whole; lines that are not JSON objects are skipped."""
    try:
        with open(log, "rb") as fh:
            end = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, end - size))
            data = fh.read()
    except OSError:
        return []
    lines = data.split(b"\n")
    if end > size:
        lines = lines[1:]  # the first one is cut
    out = []
    for line in lines:
        with contextlib.suppress(orjson.JSONDecodeError):
            obj = orjson.loads(line) if line.strip() else None
            if isinstance(obj, dict):
                out.append(obj)
    return out


def find_tell_apart(t: Target) -> tuple[TellApart, Prompt] | None:
    """A prompt of the log the two sides answer differently and reproducibly, and the
    prompt itself from the prompts in use; None when there is none."""
    if not t.log.exists():
        return None
    found = tell_apart(_tail_records(t.log, TELL_APART_BYTES))
    if found is None:
        return None
    from shadow_burnin.prompts import load_builtin, load_file

    try:
        prompts = load_file(t.cfg.run.prompts) if t.cfg.run.prompts else load_builtin()
    except ShadowBurninError:
        return None
    prompt = next((p for p in prompts if p.id == found.prompt_id), None)
    return None if prompt is None else (found, prompt)


async def _prompt_check(p: Prober, path: str, side: str, prompt: Prompt, want: str,
                        name: str) -> Check:
    ok, _ms, text, err = await p.complete(path, side, prompt,
                                          prompt.max_tokens or p.t.cfg.request.max_tokens)
    if ok and text == want:
        return Check(name, True, f"answered {side}'s logged reply ({len(want)} chars)")
    return Check(name, False, err or f"the reply is not {side}'s logged reply")


async def verify(t: Target, p: Prober, *, main: str, legacy: bool,
                 apart: tuple[TellApart, Prompt] | None) -> list[Check]:
    """``prefix`` answered by ``main`` ("v1"/"v2"); ``legacy``: the legacy prefix by v1."""
    cut = t.cut
    want = t.v1 if main == "v1" else t.v2
    checks = [await _dial_check(p, cut.prefix, main, want, f"{cut.prefix}… → {main}")]
    if legacy:
        checks.append(await _dial_check(p, cut.legacy_prefix, "v1", t.v1,
                                        f"{cut.legacy_prefix}… → v1 (as {cut.prefix}…)"))
    if apart is not None:
        found, prompt = apart
        path = _api_path(t, cut.prefix)
        if path is not None:
            text = found.v1_text if main == "v1" else found.v2_text
            checks.append(await _prompt_check(p, path, main, prompt, text,
                                              f"prompt {found.prompt_id} via {cut.prefix}"))
            legacy_path = _api_path(t, cut.legacy_prefix)
            if legacy and legacy_path is not None:
                checks.append(await _prompt_check(
                    p, legacy_path, "v1", prompt, found.v1_text,
                    f"prompt {found.prompt_id} via {cut.legacy_prefix}"))
    return checks


async def verify_restored(t: Target, p: Prober, saved: Snapshot) -> list[Check]:
    """The saved config is live again (digest) and the route answers through the proxy
    (the upstream header, when the saved config sets it, names v1)."""
    checks: list[Check] = []
    try:
        live = await t.admin.get_config()
        same = live.digest == saved.digest
        checks.append(Check("saved config live again", same,
                            "digest matches" if same else "the live config differs"))
    except ProxyError as exc:
        checks.append(Check("saved config live again", False, str(exc)))
    status, got, err = None, None, ""
    for attempt in range(VERIFY_TRIES):
        status, got, err = await p.upstream(t.cut.prefix, "v1")
        if status is not None and status < 500 and got in (None, t.v1):
            break
        if attempt + 1 < VERIFY_TRIES:
            await asyncio.sleep(0.2)
    ok = status is not None and status < 500 and got in (None, t.v1)
    checks.append(Check(f"{t.cut.prefix}… answers (v1)", ok,
                        err or f"HTTP {status}" + (f", Caddy dialled {got}" if got else "")))
    return checks


# -- snapshots and events ---------------------------------------------------------------


def save_snapshot(log: Path, snap: Snapshot) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    path = log.with_name(f"{log.name}{CADDY_BEFORE}{stamp}.json")
    write_atomic(path, orjson.dumps(snap.config, option=orjson.OPT_INDENT_2), mode=0o600)
    return path


def load_snapshot(path: Path) -> dict[str, Any] | None:
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _gates_json(ev: Evidence | None) -> dict[str, Any] | None:
    if ev is None:
        return None
    r = ev.report.to_json()
    return {"verdict": r["verdict"], "gates": [
        {"gate": g.spec.name, "state": g.state, "value": g.figure.value}
        for g in ev.report.results]}


def figures(ev: Evidence | None) -> dict[str, Any] | None:
    if ev is None:
        return None
    s = ev.summary
    lat = {side: (s.latency_ms[side] or {}).get("p95") for side in ("v1", "v2")}
    return {"rounds": s.rounds, "parity_rounds": s.parity_rounds,
            "exact_match_rate": s.exact_match_rate, "p95_ms": lat, "p95_gap_ms": s.p95_gap_ms}


async def _announce(t: Target, event: dict[str, Any], ev: Evidence | None, text: str
                    ) -> list[dict[str, Any]]:
    cut = t.cut
    if not (cut.webhook or cut.on_cutover):
        return []
    body = {"text": text, "event": event["event"], event["event"]: event,
            "gates": _gates_json(ev), "figures": figures(ev), "log": str(t.log)}
    outcomes = await announce(body, command=cut.on_cutover, webhook=cut.webhook,
                              timeout_s=cut.announce_timeout)
    return [{"channel": o.channel, "ok": o.ok, "detail": o.detail} for o in outcomes]


def _guard_caddyfile(t: Target, path: Path) -> None:
    files = LogFiles(t.log, Path(t.cfg.paths.state), Path(t.cfg.ppl_log()))
    if files.owns(path):
        raise ConfigError(path, "refusing to write here: it is the log or one of its side "
                          "files")


def caddyfile_snippet(t: Target, *, cut: bool) -> str:
    c = t.cut
    if not cut:
        return (f"remove the `handle {c.legacy_route} {{ … }}` block, and in the {c.route} "
                f"block:\nhandle {c.route} {{\n\treverse_proxy {t.v1}\n}}")
    return (f"handle {c.legacy_route} {{\n\turi path_regexp ^{c.legacy_prefix} {c.prefix}\n"
            f"\treverse_proxy {t.v1}\n}}\nhandle {c.route} {{\n\treverse_proxy {t.v2}\n}}")


# -- cutover ------------------------------------------------------------------------------


async def cutover(cfg: Config, opts: Options, say: Say) -> Result:
    if opts.force and not (opts.reason or "").strip():
        raise ConfigError(None, "--force needs --reason \"why the gates are overridden\"")
    t = Target.of(cfg)
    ev = gather(cfg)
    verdict = ev.report.verdict
    gates_code = ev.report.exit_code
    forced = verdict != "pass"
    if forced and not opts.force and not opts.dry_run:
        what = "red" if gates_code == EXIT_RED else "waiting"
        return Result(gates_code, f"gates {what}: nothing changed (--force --reason … "
                      "overrides)", evidence=ev)
    snap = await t.admin.get_config()
    ref, side, legacy = locate(t, snap.config)
    if side == "v2":
        extra = "" if legacy else f" (there is no {t.cut.legacy_route} route)"
        return Result(EXIT_DONE, f"already cut over: {t.cut.route} points at v2 ({t.v2}); "
                      f"nothing to do{extra}", evidence=ev)
    if legacy is not None:
        raise ProxyError(f"{t.cut.legacy_route} already exists while {t.cut.route} points "
                         f"at v1: {list_routes(snap.config)}; remove it first")
    c = t.cut
    new = plan_cutover(snap.config, ref, v1=t.v1, v2=t.v2, prefix=c.prefix,
                       legacy_path=c.legacy_route, legacy_prefix=c.legacy_prefix,
                       v2_tls=t.tls("v2"))
    edit = _caddyfile_edit(t, opts.caddyfile, cut=True)
    res = Result(EXIT_DONE, "", evidence=ev, diff=routes_diff(snap.config, new, ref.server),
                 caddyfile_diff=edit.diff if edit else None)
    if opts.dry_run:
        code = gates_code if forced and not opts.force else EXIT_DONE
        res.code, res.headline = code, "dry run: nothing changed"
        return res
    base, host = t.base(ref)
    apart = find_tell_apart(t)
    snapshot = save_snapshot(t.log, snap)
    say(f"saved Caddy's live config to {snapshot}")
    started = time.perf_counter()
    await t.admin.replace_config(new, snap)  # ProxyError: nothing changed
    say(f"Caddy: {c.route} → v2 ({t.v2}), {c.legacy_route} → v1 ({t.v1}); verifying "
        f"through {base}")
    event: dict[str, Any] = {
        "kind": "event", "event": CUTOVER_EVENT, "ts": now_iso(), "route": c.route,
        "legacy_route": c.legacy_route, "from": t.v1, "to": t.v2, "caddy": c.caddy,
        "proxy": base, "gates": _gates_json(ev), "config_before": snap.digest,
        "snapshot": snapshot.name, "forced": forced}
    if forced:
        event.update(reason=(opts.reason or "").strip(), by=opts.by or user())
    async with Prober(t, base, host) as p:
        try:
            after = await t.admin.get_config()
            event["config_after"] = after.digest
            checks = await verify(t, p, main="v2", legacy=True, apart=apart)
        except ProxyError as exc:
            after = None
            checks = [Check("read the config back", False, str(exc))]
        res.checks = checks
        event["verified"] = all(ch.ok for ch in checks)
        event["checks"] = [ch.to_json() for ch in checks]
        event["seconds_to_verified"] = round(time.perf_counter() - started, 4)
        if not event["verified"]:
            append_event(t.log, event)
            failed = "; ".join(f"{ch.name}: {ch.detail}" for ch in checks if not ch.ok)
            say(f"verification FAILED ({failed}); restoring the saved config")
            return await _restore(t, p, snap, after, snapshot, failed, res)
        text = (f"shadow-burnin: cut over {c.route} to v2 ({t.v2}) at {event['ts']}; "
                f"{c.legacy_route} → v1 ({t.v1})"
                + (f" — FORCED: {event.get('reason')}" if forced else ""))
        event["announced"] = await _announce(t, event, ev, text)
        append_event(t.log, event)
        res.lines.append(f"verified in {event['seconds_to_verified']:.3f} s: "
                         + "; ".join(f"{ch.name} ({ch.detail})" for ch in checks))
        for o in event["announced"]:
            if not o["ok"]:
                res.warnings.append(f"announcement by {o['channel']} failed: {o['detail']}")
        _finish_caddyfile(snap.config, edit, res, caddyfile_snippet(t, cut=True))
        res.headline = f"cut over: {c.route} → v2 ({t.v2}); {c.legacy_route} → v1 ({t.v1})"
        if opts.watch:
            return await watch(t, p, opts.watch, say, res, edit.path if edit else None)
    return res


async def _restore(t: Target, p: Prober, snap: Snapshot, after: Snapshot | None,
                   snapshot: Path, failed: str, res: Result) -> Result:
    c = t.cut
    try:
        current = after or await t.admin.get_config()
        await t.admin.replace_config(snap.config, current)
        checks = await verify_restored(t, p, snap)
    except ProxyError as exc:
        checks = [Check("restore the saved config", False, str(exc))]
    res.checks += checks
    ok = all(ch.ok for ch in checks)
    event = {"kind": "event", "event": ROLLBACK_EVENT, "ts": now_iso(), "route": c.route,
             "from": t.v2, "to": t.v1, "automatic": True, "mode": "restore",
             "reason": f"verification after the cutover failed: {failed}",
             "snapshot": snapshot.name, "verified": ok,
             "checks": [ch.to_json() for ch in checks]}
    with contextlib.suppress(ShadowBurninError):
        live = await t.admin.get_config()
        event["config_after"] = live.digest
    append_event(t.log, event)
    if ok:
        res.code = EXIT_ROLLED_BACK
        res.headline = ("flipped, failed verification, rolled back: Caddy runs its previous "
                        f"config again ({failed})")
        return res
    res.code, res.unknown = EXIT_UNKNOWN, True
    res.headline = (f"CADDY'S STATE IS UNKNOWN: the cutover failed verification ({failed}) "
                    "and restoring the previous config could not be verified")
    res.lines.append(_unknown_help(t, snapshot))
    return res


def _unknown_help(t: Target, snapshot: Path) -> str:
    return (f"look at the live config: curl -s {t.cut.caddy}/config/ ; put the saved one "
            f"back: curl -X POST -H 'Content-Type: application/json' --data-binary "
            f"@{snapshot} {t.cut.caddy}/load ; then check that {t.cut.prefix}… answers")


def _caddyfile_edit(t: Target, path: Path | None, *, cut: bool) -> cfile.CaddyfileEdit | None:
    path = path or (Path(t.cut.caddyfile) if t.cut.caddyfile else None)
    if path is None:
        return None
    _guard_caddyfile(t, path)
    c = t.cut
    before = cfile.read(path)
    if cut:
        after = cfile.edit_cutover(before, route=c.route, legacy_route=c.legacy_route,
                                   prefix=c.prefix, legacy_prefix=c.legacy_prefix,
                                   v1=t.v1, v2=t.v2)
        cfile.prove(after, path, route=c.route, legacy_route=c.legacy_route, target=t.v2,
                    legacy=t.v1)
    else:
        after = cfile.edit_rollback(before, route=c.route, legacy_route=c.legacy_route,
                                    v1=t.v1, v2=t.v2)
        cfile.prove(after, path, route=c.route, legacy_route=c.legacy_route, target=t.v1,
                    legacy=None)
    return cfile.CaddyfileEdit(path, before, after)


def _finish_caddyfile(live: dict[str, Any], edit: cfile.CaddyfileEdit | None, res: Result,
                      snippet: str) -> None:
    if edit is not None:
        try:
            backup = cfile.write(edit)
            res.lines.append(f"wrote {edit.path} (backup: {backup}); `caddy reload` keeps "
                             "this change")
        except ShadowBurninError as exc:
            res.warnings.append(f"the Caddyfile was not written: {exc}")
    elif looks_adapted_from_caddyfile(live):
        res.warnings.append(
            "Caddy was started from a Caddyfile: this change lives only in Caddy's memory "
            "and the next `systemctl reload caddy` undoes it. Make the same change in the "
            "Caddyfile (or pass --caddyfile PATH):\n" + snippet)


# -- rollback -----------------------------------------------------------------------------


async def rollback(cfg: Config, *, reason: str | None, by: str | None, say: Say,
                   caddyfile: Path | None = None, automatic: bool = False) -> Result:
    t = Target.of(cfg)
    return await _rollback(t, reason=reason, by=by, say=say, caddyfile=caddyfile,
                           automatic=automatic)


async def _rollback(t: Target, *, reason: str | None, by: str | None, say: Say,
                    caddyfile: Path | None, automatic: bool) -> Result:
    c = t.cut
    snap = await t.admin.get_config()
    ref, side, legacy = locate(t, snap.config)
    if side == "v1" and legacy is None:
        return Result(EXIT_DONE, f"already on v1: {c.route} points at v1 ({t.v1}); nothing "
                      "to do")
    last = last_cutover(iter_event_file(t.log)) if events_path(t.log).exists() else None
    saved: dict[str, Any] | None = None
    if last is not None and last.get("config_after") == snap.digest and last.get("snapshot"):
        path = t.log.with_name(str(last["snapshot"]))
        data = load_snapshot(path)
        if data is not None and config_digest(data) == last.get("config_before"):
            saved = data
    mode = "restore" if saved is not None else "repoint"
    new = saved if saved is not None else plan_rollback(snap.config, ref, legacy, v1=t.v1,
                                                        v1_tls=t.tls("v1"))
    edit = _caddyfile_edit(t, caddyfile, cut=False)
    started = time.perf_counter()
    await t.admin.replace_config(new, snap)
    how = "saved config restored" if saved else "route re-pointed"
    say(f"Caddy: {c.route} → v1 ({t.v1}) ({how}, {c.legacy_route} removed); verifying")
    base, host = t.base(ref)
    async with Prober(t, base, host) as p:
        if saved is not None:
            checks = await verify_restored(t, p, Snapshot(saved, None))
        else:
            checks = await verify(t, p, main="v1", legacy=False, apart=None)
            live = await t.admin.get_config()
            gone = find_route(live.config, c.legacy_route) is None
            checks.append(Check(f"{c.legacy_route} removed", gone,
                                "not in the live config" if gone else "still there"))
    ok = all(ch.ok for ch in checks)
    event: dict[str, Any] = {
        "kind": "event", "event": ROLLBACK_EVENT, "ts": now_iso(), "route": c.route,
        "from": t.v2, "to": t.v1, "automatic": automatic, "mode": mode,
        "reason": (reason or "").strip() or None, "by": by or user(),
        "config_before": snap.digest, "verified": ok,
        "seconds_to_verified": round(time.perf_counter() - started, 4),
        "checks": [ch.to_json() for ch in checks]}
    with contextlib.suppress(ShadowBurninError):
        event["config_after"] = (await t.admin.get_config()).digest
    text = (f"shadow-burnin: {'automatic ' if automatic else ''}rollback of {c.route} to v1 "
            f"({t.v1}) at {event['ts']}" + (f": {event['reason']}" if event["reason"] else ""))
    event["announced"] = await _announce(t, event, None, text)
    append_event(t.log, event)
    res = Result(EXIT_DONE, f"rolled back: {c.route} → v1 ({t.v1})", checks=checks)
    res.lines.append(("verified" if ok else "NOT verified")
                     + f" in {event['seconds_to_verified']:.3f} s: "
                     + "; ".join(f"{ch.name} ({ch.detail})" for ch in checks))
    for o in event["announced"]:
        if not o["ok"]:
            res.warnings.append(f"announcement by {o['channel']} failed: {o['detail']}")
    if not ok:
        res.code, res.unknown = EXIT_UNKNOWN, True
        res.headline = (f"CADDY'S STATE IS UNKNOWN: the rollback was applied but {c.prefix}… "
                        "could not be verified to reach v1")
        res.lines.append(f"look at the live config: curl -s {c.caddy}/config/ ; is v1 "
                         f"({t.v1}) up?")
        return res
    _finish_caddyfile(snap.config, edit, res, caddyfile_snippet(t, cut=False))
    return res


# -- the watched promotion ------------------------------------------------------------


class _Tail:
    """New complete lines of a file since it was opened (only new bytes are read)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.offset = path.stat().st_size
        except OSError:
            self.offset = 0

    def read(self) -> list[dict[str, Any]]:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except OSError:
            return []
        end = data.rfind(b"\n")
        if end < 0:
            return []
        self.offset += end + 1
        out = []
        for line in data[:end].splitlines():
            with contextlib.suppress(orjson.JSONDecodeError):
                obj = orjson.loads(line)
                if isinstance(obj, dict):
                    out.append(obj)
        return out


def _p95(values: list[float]) -> float | None:
    if len(values) < 2:
        return values[0] if values else None
    return statistics.quantiles(values, n=20, method="inclusive")[18]


class _Watch(msgspec.Struct):
    probes: dict[str, deque[tuple[bool, float]]]
    rounds: int = 0
    v2_failed_rounds: int = 0
    events: list[dict[str, Any]] = msgspec.field(default_factory=list)

    def figures(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for side, q in self.probes.items():
            oks = [ms for ok, ms in q if ok]
            n = len(q)
            out[side] = {"probes": n, "errors": n - len(oks),
                         "error_rate": (n - len(oks)) / n if n else None,
                         "p95_ms": _p95(oks)}
        out["rounds"] = {"rounds": self.rounds, "v2_failed": self.v2_failed_rounds}
        out["halt"] = halt_status(self.events).active
        return out


def decide(cut: CutoverConfig, fig: dict[str, Any]) -> list[str]:
    """Why to roll back (empty: keep going). Pure."""
    why = []
    v1, v2 = fig["v1"], fig["v2"]
    if v2["probes"] >= cut.min_probes and v2["error_rate"] > cut.max_error_rate:
        why.append(f"v2 error rate through the proxy {100 * v2['error_rate']:.1f} % "
                   f"({v2['errors']}/{v2['probes']}) > {100 * cut.max_error_rate:g} %")
    if v2["probes"] >= cut.min_probes and v1["probes"] >= cut.min_probes and \
            v1["p95_ms"] and v2["p95_ms"] is not None and \
            v2["p95_ms"] / v1["p95_ms"] > cut.max_p95_ratio and \
            v2["p95_ms"] - v1["p95_ms"] > cut.min_p95_gap_ms:
        why.append(f"v2 p95 {v2['p95_ms']:.1f} ms is {v2['p95_ms'] / v1['p95_ms']:.2f}× v1's "
                   f"{v1['p95_ms']:.1f} ms > {cut.max_p95_ratio:g}× (and "
                   f"> +{cut.min_p95_gap_ms:g} ms)")
    r = fig["rounds"]
    if r["rounds"] >= cut.min_probes and r["v2_failed"] / r["rounds"] > cut.max_error_rate:
        why.append(f"the running burn-in sees v2 fail in {r['v2_failed']}/{r['rounds']} "
                   f"rounds > {100 * cut.max_error_rate:g} %")
    if cut.rollback_on_halt and fig["halt"]:
        why.append("the running burn-in raised a no-match halt")
    return why


PROBE_PROMPT = Prompt(id="cutover-probe", category="probe", prompt="Reply with one word: OK")


async def watch(t: Target, p: Prober, duration: float, say: Say, res: Result,
                caddyfile: Path | None = None) -> Result:
    """Probe through Caddy and watch the log until ``duration`` ends or a limit is crossed."""
    cut = t.cut
    window = max(cut.min_probes, int(cut.probe_rate * 60))
    state = _Watch({"v1": deque(maxlen=window), "v2": deque(maxlen=window)})
    log_tail, ev_tail = _Tail(t.log), _Tail(events_path(t.log))
    path_v2, path_v1 = _api_path(t, cut.prefix), _api_path(t, cut.legacy_prefix)
    max_tokens = min(8, t.cfg.request.max_tokens)

    async def one(side: str, path: str | None, prefix: str) -> None:
        if path is not None:
            ok, ms, _, _ = await p.complete(path, side, PROBE_PROMPT, max_tokens)
        else:
            start = time.perf_counter()
            status, _, _ = await p.upstream(prefix, side)
            ok, ms = status is not None and status < 500, 1000 * (time.perf_counter() - start)
        state.probes[side].append((ok, ms))

    async def probing() -> None:
        interval = 1.0 / cut.probe_rate
        while True:
            tick = time.monotonic()
            await asyncio.gather(one("v2", path_v2, cut.prefix),
                                 one("v1", path_v1, cut.legacy_prefix))
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - tick)))

    say(f"watching for {duration:g} s: probes through Caddy at {cut.probe_rate:g}/s, a check "
        f"every {cut.check_every:g} s")
    prober = asyncio.create_task(probing())
    end = time.monotonic() + duration
    checks = 0
    try:
        while True:
            last = time.monotonic() + cut.check_every >= end
            await asyncio.sleep(max(0.0, min(cut.check_every, end - time.monotonic())))
            for rec in log_tail.read():
                kind = rec.get("kind", "round")
                if kind == "round":
                    state.rounds += 1
                    state.v2_failed_rounds += rec.get("bucket") in ("v2-unreachable",
                                                                    "both-unreachable")
                elif kind == "event":
                    state.events.append(rec)
            state.events.extend(ev_tail.read())
            fig = state.figures()
            why = decide(cut, fig)
            checks += 1
            decision = "rollback" if why else ("promoted" if last else "continue")
            append_event(t.log, {"kind": "event", "event": CHECK_EVENT, "ts": now_iso(),
                                 "route": cut.route, "check": checks, "figures": fig,
                                 "decision": decision, "reasons": why})
            say(f"check {checks}: v2 {fig['v2']['errors']}/{fig['v2']['probes']} errors, "
                f"p95 v2 {_ms(fig['v2']['p95_ms'])} v1 {_ms(fig['v1']['p95_ms'])}, "
                f"{fig['rounds']['rounds']} new rounds → {decision}")
            if why or last:
                break
    finally:
        prober.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await prober
    if not why:
        res.lines.append(f"watch ended green after {checks} checks: v2 stays")
        return res
    say("rolling back by itself: " + "; ".join(why))
    back = await _rollback(t, reason="watched promotion: " + "; ".join(why),
                           by="shadow-burnin cutover --watch", say=say, caddyfile=caddyfile,
                           automatic=True)
    res.lines += back.lines
    res.checks += back.checks
    res.warnings += back.warnings
    if back.unknown:
        res.code, res.unknown, res.headline = EXIT_UNKNOWN, True, back.headline
    else:
        res.code = EXIT_ROLLED_BACK
        res.headline = "watched promotion rolled back by itself: " + "; ".join(why)
    return res


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f} ms"


def run(coro: Any) -> Result:
    """Run a use case from synchronous code (the CLI)."""
    result: Result = asyncio.run(coro)
    return result
