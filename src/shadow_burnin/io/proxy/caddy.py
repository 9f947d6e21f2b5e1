"""Caddy's admin API: read the live config, find a route by its path matcher, edit it,
apply the edit as one atomic change guarded against a concurrent edit.

- :class:`CaddyAdmin` talks to the admin endpoint (``GET /config/``, ``PATCH /config/``).
  Caddy 2.6 sends the ETag of ``GET /config/`` as an HTTP *trailer*, which aiohttp drops;
  the requests here go through ``h11`` (a maintained HTTP/1.1 state machine) so the
  trailer is read, and the write carries ``If-Match``: Caddy answers 412 if anyone changed
  the config in between. Without an ETag (a proxy in front of the admin API stripping
  trailers) the config is read again just before the write and compared by digest.
- :func:`find_routes` walks every server's routes, into ``subroute`` handlers (how a
  Caddyfile's ``handle`` blocks and site blocks are adapted: no ``@id`` anywhere), and
  returns each route with its path matchers, the host matchers around it and the
  upstreams of its ``reverse_proxy`` handlers.
- :func:`plan_cutover` / :func:`plan_rollback` return the edited config (pure, deep
  copies): the route re-pointed, the ``-legacy`` route added or removed. Every
  ``reverse_proxy`` written sets the response header :data:`UPSTREAM_HEADER` from
  ``{http.reverse_proxy.upstream.hostport}``, so a request through the proxy tells which
  upstream Caddy actually dialled.

Every failure is one :class:`~shadow_burnin.errors.ProxyError` (exit 2), raised before
anything changed, or when Caddy refused the change (then Caddy kept its old config).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import difflib
import hashlib
from collections.abc import Iterator
from typing import Any, cast
from urllib.parse import urlsplit

import h11
import msgspec
import orjson

from shadow_burnin.core.structs import repr_without, shown_fields
from shadow_burnin.errors import ProxyError

UPSTREAM_HEADER = "X-Shadow-Burnin-Upstream"
UPSTREAM_PLACEHOLDER = "{http.reverse_proxy.upstream.hostport}"
MAX_CONFIG_BYTES = 64 * 1024 * 1024
Pointer = tuple[str | int, ...]


def canonical(config: Any) -> bytes:
    """The config as canonical JSON (sorted keys): what digests are taken of."""
    return orjson.dumps(config, option=orjson.OPT_SORT_KEYS)


def config_digest(config: Any) -> str:
    return "sha256:" + hashlib.sha256(canonical(config)).hexdigest()


class Snapshot(msgspec.Struct, frozen=True):
    """The live config as read, with the ETag Caddy sent for it (None if none came)."""

    config: dict[str, Any]
    etag: str | None

    @property
    def digest(self) -> str:
        return config_digest(self.config)


# -- the admin client ---------------------------------------------------------------


class CaddyAdmin:
    """One admin endpoint (``http://host:port`` with an optional path prefix)."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ProxyError(f"Caddy admin URL must be http://host:port, got {url!r}")
        self.url = url.rstrip("/")
        self.host = parts.hostname
        try:
            self.port = parts.port or 80
        except ValueError:
            raise ProxyError(f"Caddy admin URL has a bad port: {url!r}") from None
        self.netloc = parts.netloc
        self.base = parts.path.rstrip("/")
        self.timeout = timeout

    async def get_config(self) -> Snapshot:
        """``GET /config/``: the whole live config and its ETag (header or trailer)."""
        status, body, fields = await self._request("GET", "/config/")
        if status != 200:
            raise ProxyError(f"Caddy admin API at {self.url} answered GET /config/ with "
                             f"HTTP {status}{_error_text(body)}")
        try:
            config = orjson.loads(body) if body.strip() else None
        except orjson.JSONDecodeError:
            raise ProxyError(f"Caddy admin API at {self.url}: GET /config/ is not JSON "
                             "(is this Caddy's admin endpoint?)") from None
        if config is None:
            raise ProxyError(f"Caddy at {self.url} runs with an empty config (no routes)")
        if not isinstance(config, dict):
            raise ProxyError(f"Caddy admin API at {self.url}: the config is not a JSON object")
        return Snapshot(config, fields.get("etag"))

    async def replace_config(self, new: dict[str, Any], read: Snapshot) -> None:
        """Apply ``new`` as one change (``PATCH /config/``, Caddy loads it atomically and
        keeps the old config if the new one fails), only if the live config is still
        ``read``: ``If-Match`` with its ETag, else a digest compare just before."""
        headers = [("Content-Type", "application/json")]
        if read.etag:
            headers.append(("If-Match", read.etag))
        else:
            now = await self.get_config()
            if now.digest != read.digest:
                raise ProxyError(_CONCURRENT)
        status, body, _ = await self._request("PATCH", "/config/", canonical(new), headers)
        if status == 412:
            raise ProxyError(_CONCURRENT)
        if status != 200:
            raise ProxyError(f"Caddy rejected the new config (HTTP {status}"
                             f"{_error_text(body)}); Caddy kept its previous config")

    async def _request(self, method: str, path: str, body: bytes = b"",
                       headers: list[tuple[str, str]] | None = None
                       ) -> tuple[int, bytes, dict[str, str]]:
        """One request on its own connection; (status, body, headers + trailers)."""
        try:
            async with asyncio.timeout(self.timeout):
                return await self._exchange(method, path, body, headers or [])
        except TimeoutError:
            raise ProxyError(f"Caddy admin API at {self.url}: no answer to {method} {path} "
                             f"within {self.timeout:g} s") from None
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise ProxyError(f"Caddy admin API at {self.url} unreachable: {reason} (is Caddy "
                             "running, with its admin endpoint on this address? `admin off` "
                             "turns it off)") from None
        except (h11.ProtocolError, ValueError) as exc:
            raise ProxyError(f"Caddy admin API at {self.url}: not a valid HTTP answer "
                             f"({type(exc).__name__})") from None

    async def _exchange(self, method: str, path: str, body: bytes,
                        headers: list[tuple[str, str]]) -> tuple[int, bytes, dict[str, str]]:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            conn = h11.Connection(h11.CLIENT)
            req_headers = [("Host", self.netloc), ("TE", "trailers"), ("Connection", "close"),
                           ("User-Agent", "shadow-burnin"), *headers]
            if method != "GET":
                req_headers.append(("Content-Length", str(len(body))))
            out = conn.send(h11.Request(method=method, target=self.base + path,
                                        headers=req_headers)) or b""
            if body:
                out += conn.send(h11.Data(data=body)) or b""
            out += conn.send(h11.EndOfMessage()) or b""
            writer.write(out)
            await writer.drain()
            status, chunks, size, fields = 0, [], 0, {}
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await reader.read(65536))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                    fields.update(_fields(event.headers))
                elif isinstance(event, h11.Data):
                    size += len(event.data)
                    if size > MAX_CONFIG_BYTES:
                        raise ValueError("answer too large")
                    chunks.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage):
                    fields.update(_fields(event.headers))  # the trailers
                    return status, b"".join(chunks), fields
                elif isinstance(event, h11.ConnectionClosed):
                    raise ConnectionResetError("connection closed before the answer ended")
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


_CONCURRENT = ("Caddy's config changed between our read and our write (someone else edited "
               "it); nothing was changed by this command: look at the new config, then run "
               "it again")


def _fields(headers: Any) -> dict[str, str]:
    return {bytes(k).decode("latin-1").lower(): bytes(v).decode("latin-1") for k, v in headers}


def _error_text(body: bytes) -> str:
    try:
        data = orjson.loads(body)
        text = data.get("error") if isinstance(data, dict) else None
    except orjson.JSONDecodeError:
        text = body.decode("utf-8", "replace")
    text = " ".join(str(text or "").split())[:300]
    return f": {text}" if text else ""


# -- finding routes ---------------------------------------------------------------------


_ROUTE = frozenset({"route"})


class RouteRef(msgspec.Struct, frozen=True):
    """A route in the config: where it is, what matches it, where it proxies to."""

    pointer: Pointer  # keys from the config's root to the route object
    server: str
    listen: tuple[str, ...]
    paths: tuple[str, ...]
    hosts: tuple[str, ...]  # host matchers of this route and the routes around it
    upstreams: tuple[str, ...]  # dial addresses of its reverse_proxy handlers
    route: dict[str, Any]  # the route object itself: neither in repr nor compared

    def __repr__(self) -> str:
        return repr_without(self, _ROUTE)

    def __rich_repr__(self) -> list[tuple[str, Any]]:
        return list(shown_fields(self, _ROUTE))

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._key() == cast(RouteRef, other)._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def _key(self) -> tuple[Any, ...]:
        return tuple(value for _, value in shown_fields(self, _ROUTE))

    def describe(self) -> str:
        where = f"{self.server}" + (f" host {','.join(self.hosts)}" if self.hosts else "")
        ups = ", ".join(self.upstreams) or "no reverse_proxy"
        return f"{'|'.join(self.paths) or '(any path)'} → {ups} [{where}]"


def _matcher_values(route: dict[str, Any], key: str) -> list[str]:
    out: list[str] = []
    match = route.get("match")
    if isinstance(match, list):
        for m in match:
            if isinstance(m, dict) and isinstance(m.get(key), list):
                out.extend(str(v) for v in m[key])
    return out


def _handlers(handle: Any) -> Iterator[dict[str, Any]]:
    """Every handler of a route's ``handle`` list, into subroutes (depth first)."""
    if not isinstance(handle, list):
        return
    for h in handle:
        if not isinstance(h, dict):
            continue
        yield h
        if h.get("handler") == "subroute" and isinstance(h.get("routes"), list):
            for r in h["routes"]:
                if isinstance(r, dict):
                    yield from _handlers(r.get("handle"))


def route_upstreams(route: dict[str, Any]) -> tuple[str, ...]:
    dials: list[str] = []
    for h in _handlers(route.get("handle")):
        if h.get("handler") == "reverse_proxy":
            for u in h.get("upstreams") or []:
                if isinstance(u, dict) and isinstance(u.get("dial"), str):
                    dials.append(u["dial"])
    return tuple(dials)


def all_routes(config: dict[str, Any]) -> list[RouteRef]:
    """Every route of every HTTP server, nested ones included, in config order."""
    servers = config.get("apps", {}).get("http", {}).get("servers", {})
    out: list[RouteRef] = []
    if not isinstance(servers, dict):
        return out
    for name, server in servers.items():
        if not isinstance(server, dict):
            continue
        listen = tuple(str(x) for x in server.get("listen") or [])
        _walk(server.get("routes"), ("apps", "http", "servers", name, "routes"), (),
              name, listen, out)
    return out


def _walk(routes: Any, ptr: Pointer, hosts: tuple[str, ...], server: str,
          listen: tuple[str, ...], out: list[RouteRef]) -> None:
    if not isinstance(routes, list):
        return
    for i, route in enumerate(routes):
        if not isinstance(route, dict):
            continue
        rptr = (*ptr, i)
        rhosts = hosts + tuple(_matcher_values(route, "host"))
        out.append(RouteRef(rptr, server, listen, tuple(_matcher_values(route, "path")),
                            rhosts, route_upstreams(route), route))
        handle = route.get("handle")
        if isinstance(handle, list):
            for j, h in enumerate(handle):
                if isinstance(h, dict) and h.get("handler") == "subroute":
                    _walk(h.get("routes"), (*rptr, "handle", j, "routes"), rhosts, server,
                          listen, out)


def find_routes(config: dict[str, Any], path: str) -> list[RouteRef]:
    """The routes whose path matcher lists ``path`` exactly (e.g. ``/v1/*``)."""
    return [r for r in all_routes(config) if path in r.paths]


def find_route(config: dict[str, Any], path: str) -> RouteRef | None:
    """The one route matching ``path``; None if there is none; ProxyError if several, or
    if it matches other paths too (re-pointing it would move them as well)."""
    found = find_routes(config, path)
    if len(found) > 1:
        raise ProxyError(f"ambiguous: {len(found)} routes match {path}: "
                         + "; ".join(r.describe() for r in found) + " (keep exactly one)")
    if not found:
        return None
    ref = found[0]
    if set(ref.paths) != {path}:
        raise ProxyError(f"the route for {path} also matches other paths ({ref.describe()}); "
                         f"give {path} a route of its own")
    return ref


def list_routes(config: dict[str, Any]) -> str:
    """What a human needs when the route is not where expected: every proxying route."""
    shown = [r.describe() for r in all_routes(config) if r.paths or r.upstreams]
    return "; ".join(shown) if shown else "no routes"


# -- edits (pure) ---------------------------------------------------------------------


def get_at(config: Any, ptr: Pointer) -> Any:
    node = config
    for key in ptr:
        node = node[key]
    return node


def _set_upstream(route: dict[str, Any], dial: str, tls: bool | None = None) -> None:
    """Every reverse_proxy of ``route`` to ``dial``; ``tls`` True/False: the upstream
    speaks HTTPS or plain HTTP (the transport follows), None: transport left as is."""
    for h in _handlers(route.get("handle")):
        if h.get("handler") == "reverse_proxy":
            h["upstreams"] = [{"dial": dial}]
            if tls:
                transport = h.setdefault("transport", {"protocol": "http"})
                transport.setdefault("tls", {})
            elif tls is False and isinstance(h.get("transport"), dict):
                h["transport"].pop("tls", None)
            headers = h.setdefault("headers", {})
            response = headers.setdefault("response", {})
            response.setdefault("set", {})[UPSTREAM_HEADER] = [UPSTREAM_PLACEHOLDER]


def legacy_route(route: dict[str, Any], prefix: str, legacy_path: str,
                 legacy_prefix: str) -> dict[str, Any]:
    """A copy of ``route`` (still pointing at v1) for ``legacy_path``, whose requests
    reach the upstream with their prefix rewritten back (``/v1-legacy/x`` → ``/v1/x``)."""
    new = copy.deepcopy(route)
    new.pop("@id", None)
    matches = new.get("match") or [{}]
    for m in matches:
        m["path"] = [legacy_path]
    new["match"] = matches
    rewrite = {"handler": "rewrite",
               "path_regexp": [{"find": "^" + re_escape(legacy_prefix), "replace": prefix}]}
    new["handle"] = [rewrite, *(new.get("handle") or [])]
    return new


def re_escape(text: str) -> str:
    return "".join("\\" + c if c in ".^$*+?()[]{}|\\" else c for c in text)


def plan_cutover(config: dict[str, Any], ref: RouteRef, *, v1: str, v2: str, prefix: str,
                 legacy_path: str, legacy_prefix: str, v2_tls: bool | None = None
                 ) -> dict[str, Any]:
    """The config with ``ref`` pointing at ``v2`` and a legacy route to ``v1`` before it."""
    new = copy.deepcopy(config)
    parent: list[Any] = get_at(new, ref.pointer[:-1])
    index = ref.pointer[-1]
    assert isinstance(index, int)
    original = parent[index]
    old = copy.deepcopy(original)
    _set_upstream(old, v1)
    _set_upstream(original, v2, v2_tls)
    parent.insert(index, legacy_route(old, prefix, legacy_path, legacy_prefix))
    return new


def plan_rollback(config: dict[str, Any], ref: RouteRef, legacy: RouteRef | None, *,
                  v1: str, v1_tls: bool | None = None) -> dict[str, Any]:
    """The config with ``ref`` pointing back at ``v1`` and the legacy route removed."""
    new = copy.deepcopy(config)
    _set_upstream(get_at(new, ref.pointer), v1, v1_tls)
    if legacy is not None:
        parent: list[Any] = get_at(new, legacy.pointer[:-1])
        index = legacy.pointer[-1]
        assert isinstance(index, int)
        del parent[index]
    return new


def routes_diff(before: dict[str, Any], after: dict[str, Any], server: str) -> str:
    """A unified diff of one server's routes, pretty JSON (the ``--dry-run`` view)."""
    def lines(cfg: dict[str, Any]) -> list[str]:
        routes = cfg.get("apps", {}).get("http", {}).get("servers", {}).get(server, {})
        text = orjson.dumps(routes.get("routes", []),
                            option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()
        return text.splitlines(keepends=True)

    return "".join(difflib.unified_diff(lines(before), lines(after),
                                        f"caddy routes of {server} (live)",
                                        f"caddy routes of {server} (after)"))


def looks_adapted_from_caddyfile(config: dict[str, Any]) -> bool:
    """Caddy names the servers of an adapted Caddyfile ``srv0``, ``srv1``, … and uses no
    ``@id``: a config like that is lost on the next reload of the Caddyfile."""
    servers = config.get("apps", {}).get("http", {}).get("servers", {})
    if not isinstance(servers, dict) or not servers:
        return False
    return all(isinstance(k, str) and k.startswith("srv") and k[3:].isdigit()
               for k in servers) and b'"@id"' not in canonical(config)


def proxy_base(ref: RouteRef) -> tuple[str, str | None]:
    """Where to reach the route from this machine: (base URL, Host header or None),
    from its server's first listen address and the host matchers around it."""
    listen = ref.listen[0] if ref.listen else ":80"
    addr = listen.split("/", 1)[-1] if "/" in listen else listen
    host, _, port = addr.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    port = port.split("-", 1)[0] or "80"
    scheme = "https" if port == "443" else "http"
    vhost = next((h for h in ref.hosts if "*" not in h and "{" not in h), None)
    return f"{scheme}://{host}:{port}", vhost
