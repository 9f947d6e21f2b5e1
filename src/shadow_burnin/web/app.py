"""``serve``: the aiohttp dashboard over a log, live while ``run`` writes it.

Pages (server-rendered HTML; every string from data escaped by ``render.html_views``):
``/`` overview, ``/plots``, ``/divergences`` (filters in the query string), ``/round/N``;
over several logs (a fleet) the pages show the pooled rounds, the overview a per-shard
table, and ``?shard=NAME`` on any page shows that shard alone (a round page needs it);
``/api/version`` (what ``static/app.js`` polls to refresh the page without a reload) and
``/metrics`` (Prometheus text). Headers: a Content-Security-Policy allowing only this
origin's script and style files (no inline script, no third-party origin), nosniff,
no referrer, no framing. With an auth token every page needs the session cookie the
login form sets (HttpOnly, SameSite=Strict), ``/metrics`` a Bearer header.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from functools import partial
from importlib.resources import files
from typing import Any

from aiohttp import web

from shadow_burnin.app.dashboard import Dashboard, Filters, FleetDashboard, dashboard_for
from shadow_burnin.app.metrics import exposition, registry_for
from shadow_burnin.config import Config
from shadow_burnin.core.timefmt import iso_s as iso
from shadow_burnin.errors import ShadowBurninError
from shadow_burnin.io.log.logread import parse_time
from shadow_burnin.io.log.logset import Shard
from shadow_burnin.render import html_views as hv
from shadow_burnin.render.escape import html as esc

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
COOKIE = "sb_session"
DASH = web.AppKey("dashboard", Dashboard)
STATE = web.AppKey("state", dict)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _static(name: str) -> bytes:
    if name == "style.css":
        return hv.stylesheet().encode()
    return files("shadow_burnin.web").joinpath(f"static/{name}").read_bytes()


def page(title: str, body: str, current: str, version: str = "", live: bool = True,
         shard: str | None = None, fleet: bool = False) -> str:
    """A whole page; ``fleet``: a bar naming the shard shown (``shard``) or the pool."""
    if fleet:
        where = (f'shard <span class="mono" data-figure="shard">{esc(shard)}</span> · '
                 '<a href="/">all shards</a>' if shard else
                 '<span data-figure="shard">all shards (pooled)</span>')
        body = f'<p class="count shardbar">{where}</p>{body}'
    return _page(title, body, current, version, live, shard)


def _page(title: str, body: str, current: str, version: str, live: bool,
          shard: str | None) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)} · shadow-burnin</title>"
        '<link rel="icon" href="data:,"><link rel="stylesheet" href="/static/style.css">'
        + ('<script src="/static/app.js" defer></script>' if live else "") +
        "</head><body>"
        '<header class="top"><div class="brand">shadow-burnin<small>v1 → v2 burn-in</small></div>'
        f"<nav>{hv.nav(current, shard=shard)}</nav>"
        + (f'<div class="live" id="live"><span class="pulse"></span>live · '
           f'<span id="updated">updated {esc(iso(time.time()))}</span></div>'
           if live else "")
        + f'</header><main id="main" data-version="{esc(version)}">{body}</main>'
        "<footer>shadow-burnin · figures from the log, the same reader as "
        "<code>bench</code></footer></body></html>")


def message(title: str, text: str, status: int = 503) -> web.Response:
    body = (f'<div class="msg"><h1>{esc(title)}</h1><p>{esc(text)}</p>'
            "<p>This page refreshes by itself when the log becomes readable.</p></div>")
    return web.Response(text=page(title, body, "", "error"), status=status,
                        content_type="text/html")


async def _call(request: web.Request, fn: Callable[..., Any], *args: Any) -> Any:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, partial(fn, *args))


@web.middleware
async def headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        resp = await handler(request)
    except ShadowBurninError as exc:
        resp = message("The log cannot be shown", str(exc))
    except web.HTTPException as exc:
        resp = exc
    except Exception as exc:
        resp = message("Internal error", f"{type(exc).__name__}: the page could not be built",
                       500)
    resp.headers["Content-Security-Policy"] = CSP
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "no-referrer"
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers.setdefault("Cache-Control", "no-store")
    return resp


def auth_middleware(token: str) -> Callable[..., Any]:
    sessions: set[str] = set()
    open_paths = {"/login", "/static/style.css", "/static/app.js"}  # no data in those

    def ok_bearer(request: web.Request) -> bool:
        got = request.headers.get("Authorization", "")
        return got.startswith("Bearer ") and hmac.compare_digest(got[7:].encode(),
                                                                  token.encode())

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/login" and request.method == "POST":
            form = await request.post()
            given = str(form.get("token", ""))
            if hmac.compare_digest(given.encode(), token.encode()):
                sid = secrets.token_urlsafe(32)
                sessions.add(sid)
                resp = web.HTTPSeeOther("/")
                resp.set_cookie(COOKIE, sid, httponly=True, samesite="Strict", path="/")
                return resp
            return login_page("wrong token", 401)
        if request.path in open_paths:
            return await handler(request)
        if request.cookies.get(COOKIE) in sessions or ok_bearer(request):
            return await handler(request)
        if request.path == "/metrics" or request.path.startswith("/api/"):
            return web.Response(status=401, text="unauthorised\n",
                                headers={"WWW-Authenticate": "Bearer"})
        raise web.HTTPSeeOther("/login")

    return auth


def login_page(error: str = "", status: int = 200) -> web.Response:
    body = ('<div class="msg"><h1>Sign in</h1><p>This dashboard is protected by a token '
            "(the one in the environment variable given to <code>--auth-token-env</code>)."
            "</p>" + (f'<p class="error">{esc(error)}</p>' if error else "") +
            '<form method="post" action="/login" class="filters"><label>token '
            '<input type="password" name="token" autocomplete="current-password" autofocus>'
            '</label><button type="submit">sign in</button></form></div>')
    return web.Response(text=page("Sign in", body, "", live=False), status=status,
                        content_type="text/html")


async def login(request: web.Request) -> web.StreamResponse:
    return login_page()


def _view(request: web.Request) -> tuple[Dashboard, str | None]:
    """The view a page shows: ``?shard=NAME`` of a fleet → that shard's; else the app's
    (one log, or the fleet pooled). HTTPNotFound for a shard that is not one."""
    d = request.app[DASH]
    name = request.query.get("shard")
    if not name:
        return d, None
    if isinstance(d, FleetDashboard) and name in d.views:
        return d.views[name], name
    raise web.HTTPNotFound(text=name)


def _shard_link(name: str) -> str:
    return f"/?{hv.query_string({'shard': name})}"


async def overview(request: web.Request) -> web.StreamResponse:
    try:
        d, shard = _view(request)
    except web.HTTPNotFound:
        return _no_shard(request)
    ov = await _call(request, d.overview)
    return await _html(request, "Overview", hv.overview(ov, _shard_link), "overview", shard)


async def plots(request: web.Request) -> web.StreamResponse:
    try:
        d, shard = _view(request)
    except web.HTTPNotFound:
        return _no_shard(request)
    s = await _call(request, d.series)
    return await _html(request, "Plots", hv.plots(s), "plots", shard)


def _no_shard(request: web.Request) -> web.Response:
    return message("No such shard", f"{request.query.get('shard', '')!r} is not one of "
                   "the logs this dashboard reads", 404)


def _epoch(text: str) -> float:
    try:
        return parse_time(text, "time").timestamp()
    except ValueError as exc:
        raise web.HTTPBadRequest(text=str(exc)) from None


async def divergences(request: web.Request) -> web.StreamResponse:
    try:
        d, shard = _view(request)
    except web.HTTPNotFound:
        return _no_shard(request)
    q = {k: v for k, v in request.query.items()}
    try:
        f = Filters.parse(q, _epoch)
    except web.HTTPBadRequest as exc:
        return message("Bad filter", exc.text or "bad filter", 400)
    data = await _call(request, d.divergences, f)
    return await _html(request, "Divergences", hv.divergences(data, q), "divergences", shard)


async def round_page(request: web.Request) -> web.StreamResponse:
    try:
        d, shard = _view(request)
    except web.HTTPNotFound:
        return _no_shard(request)
    try:
        n = int(request.match_info["n"])
    except ValueError:
        return message("No such round", "a round number is a whole number", 404)
    if isinstance(d, FleetDashboard):
        return message("Which shard?", "round numbers repeat across shards: open the round "
                       "from the divergences list, or add ?shard=NAME", 404)
    rec = await _call(request, d.round, n)
    if rec is None:
        return message("No such round", f"round {n} is not in this log", 404)
    return await _html(request, f"Round {n}", hv.round_detail(rec), "divergences", shard)


async def _html(request: web.Request, title: str, body: str, current: str,
                shard: str | None) -> web.Response:
    """The page, stamped with the app's version (what ``/api/version`` answers: for a
    fleet, of every shard, whichever shard the page shows)."""
    d = request.app[DASH]
    version = await _call(request, d.version)
    return web.Response(text=page(title, body, current, version, shard=shard,
                                  fleet=isinstance(d, FleetDashboard)),
                        content_type="text/html")


async def version(request: web.Request) -> web.StreamResponse:
    d = request.app[DASH]
    try:
        v = await _call(request, d.version)
    except ShadowBurninError:
        v = "error"
    return web.json_response({"version": v})


async def metrics(request: web.Request) -> web.StreamResponse:
    reg = request.app[STATE]["registry"]
    body = await _call(request, exposition, reg)
    return web.Response(body=body, headers={"Content-Type":
                                            "text/plain; version=0.0.4; charset=utf-8"})


async def static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    types = {"app.js": "text/javascript", "style.css": "text/css"}
    if name not in types:
        raise web.HTTPNotFound()
    return web.Response(body=_static(name), content_type=types[name], charset="utf-8",
                        headers={"Cache-Control": "no-cache"})


def make_app(cfg: Config, token: str | None = None,
             shards: list[Shard] | None = None) -> web.Application:
    """The dashboard over the config's log, or over ``shards`` (several: pooled, with a
    per-shard table and ``?shard=``)."""
    mws: list[Any] = [headers]
    if token:
        mws.append(auth_middleware(token))
    app = web.Application(middlewares=mws)
    d = dashboard_for(cfg, shards) if shards else Dashboard(cfg)
    app[DASH] = d
    app[STATE] = {"registry": registry_for(d)}
    app.router.add_get("/", overview)
    app.router.add_get("/plots", plots)
    app.router.add_get("/divergences", divergences)
    app.router.add_get("/round/{n}", round_page)
    app.router.add_get("/api/version", version)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/login", login)
    app.router.add_post("/login", login)
    return app
