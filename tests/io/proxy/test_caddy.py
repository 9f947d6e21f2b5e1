"""The Caddy admin client, route finder, edits and Caddyfile edits against a real Caddy."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import orjson
import pytest

from shadow_burnin.errors import ProxyError
from shadow_burnin.io.proxy import caddyfile as cf
from shadow_burnin.io.proxy.caddy import (
    UPSTREAM_HEADER,
    CaddyAdmin,
    Snapshot,
    config_digest,
    find_route,
    list_routes,
    looks_adapted_from_caddyfile,
    plan_cutover,
    plan_rollback,
    proxy_base,
)
from tests.io.proxy.caddyproc import free_port, running_caddy, start_caddyfile, start_json

V1, V2 = "127.0.0.1:18080", "127.0.0.1:18180"
EDIT = {"v1": V1, "v2": V2, "prefix": "/v1/", "legacy_path": "/v1-legacy/*",
        "legacy_prefix": "/v1-legacy/"}


async def test_etag_is_read_from_caddys_trailer(tmp_path: Path) -> None:
    with start_caddyfile(tmp_path, V1) as c:
        snap = await CaddyAdmin(c.admin_url).get_config()
        assert snap.etag is not None and snap.etag.startswith('"/config/ ')
        assert snap.digest == config_digest(c.live_config())
        assert looks_adapted_from_caddyfile(snap.config)


async def test_stale_etag_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    with start_json(tmp_path, V1) as c:
        admin = CaddyAdmin(c.admin_url)
        snap = await admin.get_config()
        assert not looks_adapted_from_caddyfile(snap.config)
        ref = find_route(snap.config, "/v1/*")
        assert ref is not None and ref.upstreams == (V1,)
        new = plan_cutover(snap.config, ref, **EDIT)
        stale = Snapshot(snap.config, '"/config/ 00000000"')
        with pytest.raises(ProxyError, match="changed between our read and our write"):
            await admin.replace_config(new, stale)
        assert config_digest(c.live_config()) == snap.digest
        await admin.replace_config(new, snap)  # the right ETag goes through
        live = c.live_config()
        assert find_route(live, "/v1/*").upstreams == (V2,)  # type: ignore[union-attr]
        assert find_route(live, "/v1-legacy/*").upstreams == (V1,)  # type: ignore[union-attr]


async def test_route_in_a_host_site_is_found_with_its_host(tmp_path: Path) -> None:
    http = free_port()
    admin = free_port()
    text = (f"{{\n\tadmin 127.0.0.1:{admin}\n\tauto_https off\n\tdefault_bind 127.0.0.1\n}}\n"
            f"http://sb.test:{http} {{\n\thandle /v1/* {{\n\t\treverse_proxy {V1}\n\t}}\n}}\n"
            f"http://other.test:{http} {{\n\treverse_proxy /v1/* {V2}\n}}\n")
    with running_caddy(tmp_path, text=text, admin=admin, http=http) as c:
        config = c.live_config()
        with pytest.raises(ProxyError, match=r"ambiguous: 2 routes match /v1/\*"):
            find_route(config, "/v1/*")
        listed = list_routes(config)
        assert f"/v1/* → {V1} [srv0 host sb.test]" in listed
        assert f"/v1/* → {V2} [srv0 host other.test]" in listed


async def test_nested_route_base_and_host(tmp_path: Path) -> None:
    http, admin = free_port(), free_port()
    text = (f"{{\n\tadmin 127.0.0.1:{admin}\n\tauto_https off\n\tdefault_bind 127.0.0.1\n}}\n"
            f"http://sb.test:{http} {{\n\thandle /v1/* {{\n\t\treverse_proxy {V1}\n\t}}\n}}\n")
    with running_caddy(tmp_path, text=text, admin=admin, http=http) as c:
        ref = find_route(c.live_config(), "/v1/*")
        assert ref is not None and ref.hosts == ("sb.test",)
        assert proxy_base(ref) == (f"http://127.0.0.1:{http}", "sb.test")


async def test_cutover_edit_then_rollback_edit_route_requests(tmp_path: Path,
                                                              scripted_server: object) -> None:
    v1 = await scripted_server()  # type: ignore[operator]
    v2 = await scripted_server(reply="from v2")  # type: ignore[operator]
    d1, d2 = v1.url.split("//")[1], v2.url.split("//")[1]
    with start_caddyfile(tmp_path, d1) as c:
        admin = CaddyAdmin(c.admin_url)
        snap = await admin.get_config()
        ref = find_route(snap.config, "/v1/*")
        assert ref is not None
        await admin.replace_config(plan_cutover(snap.config, ref, v1=d1, v2=d2, prefix="/v1/",
                                                legacy_path="/v1-legacy/*",
                                                legacy_prefix="/v1-legacy/"), snap)

        async def get(path: str) -> str | None:
            async with aiohttp.ClientSession() as s, s.get(c.proxy_url + path) as resp:
                await resp.read()
                return resp.headers.get(UPSTREAM_HEADER)

        assert await get("/v1/models") == d2
        assert await get("/v1-legacy/models") == d1
        assert v1.requests == [] and v1.model_requests == 1  # reached as /v1/models
        now = await admin.get_config()
        ref = find_route(now.config, "/v1/*")
        legacy = find_route(now.config, "/v1-legacy/*")
        assert ref is not None and legacy is not None
        await admin.replace_config(plan_rollback(now.config, ref, legacy, v1=d1), now)
        assert await get("/v1/models") == d1
        assert find_route(c.live_config(), "/v1-legacy/*") is None


async def test_admin_that_is_not_caddy(scripted_server: object) -> None:
    other = await scripted_server()  # type: ignore[operator]
    with pytest.raises(ProxyError, match="HTTP 404"):
        await CaddyAdmin(other.url).get_config()
    with pytest.raises(ProxyError, match="must be http://host:port"):
        CaddyAdmin("ftp://x")


# -- the Caddyfile on disk --------------------------------------------------------------

FORMS = {
    "handle": "{\n\tadmin off\n}\n:8080 {\n\thandle /v1/* {\n\t\treverse_proxy "
              f"{V1}\n\t}}\n\thandle {{\n\t\trespond 404\n\t}}\n}}\n",
    "one-line": f"{{\n\tadmin off\n}}\nsb.test {{\n\treverse_proxy /v1/* http://{V1}\n}}\n",
    "block": f"{{\n\tadmin off\n}}\nsb.test {{\n\treverse_proxy /v1/* {V1} {{\n"
             "\t\tflush_interval -1\n\t}\n}\n",
}
KW = {"route": "/v1/*", "legacy_route": "/v1-legacy/*"}


@pytest.mark.parametrize("form", sorted(FORMS))
def test_caddyfile_edits_prove_out_and_roll_back(tmp_path: Path, form: str) -> None:
    path = tmp_path / "Caddyfile"
    text = FORMS[form]
    path.write_text(text)
    after = cf.edit_cutover(text, prefix="/v1/", legacy_prefix="/v1-legacy/", v1=V1, v2=V2,
                            **KW)
    cf.prove(after, path, target=V2, legacy=V1, **KW)
    back = cf.edit_rollback(after, v1=V1, v2=V2, **KW)
    cf.prove(back, path, target=V1, legacy=None, **KW)
    assert back == text.replace(f"http://{V1}", V1)
    edit = cf.CaddyfileEdit(path, text, after)
    backup = cf.write(edit)
    assert path.read_text() == after and backup.read_text() == text
    assert f"+\t\treverse_proxy {V2}" in edit.diff or f"reverse_proxy /v1/* {V2}" in edit.diff


def test_caddyfile_edit_refusals(tmp_path: Path) -> None:
    path = tmp_path / "Caddyfile"
    with pytest.raises(ProxyError, match="no `handle /v1/"):
        cf.edit_cutover(":80 {\n\trespond 404\n}\n", prefix="/v1/",
                        legacy_prefix="/v1-legacy/", v1=V1, v2=V2, **KW)
    with pytest.raises(ProxyError, match="does not proxy to v1"):
        cf.edit_cutover(FORMS["handle"].replace(V1, "10.0.0.1:1"), prefix="/v1/",
                        legacy_prefix="/v1-legacy/", v1=V1, v2=V2, **KW)
    with pytest.raises(ProxyError, match="caddy adapt"):
        cf.prove(":80 {\n\thandle /v1/* {\n\t\tno_such_directive\n\t}\n}\n", path, target=V2,
                 legacy=V1, **KW)
    with pytest.raises(ProxyError, match="would not point at"):
        cf.prove(FORMS["handle"], path, target=V2, legacy=V1, **KW)


def test_snapshot_json_round_trips(tmp_path: Path) -> None:
    config = {"apps": {"http": {"servers": {}}}, "b": [1, "é"]}
    raw = orjson.dumps(config, option=orjson.OPT_INDENT_2)
    assert config_digest(orjson.loads(raw)) == config_digest(config)
