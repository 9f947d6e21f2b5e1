"""Secrets and TLS: API keys come from environment variables named in the config
(``api_key_env``) or by ``--v1-key-env``/``--v2-key-env``, go out as
``Authorization: Bearer``, and appear nowhere else: not in the log, the state, ``run``'s
stdout/stderr, error messages (a 401 that echoes the key back, a missing variable),
``config`` or ``bench``. ``https`` targets are verified unless ``--insecure``.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.cli.conftest import write_prompts
from tests.servers.faults import Exchange, Reply, respond

KEY1 = "sk-v1-SECRET-4f9c2a7e1b"
KEY2 = "sk-v2-SECRET-0d3b8e6f5a"
CLI = [sys.executable, "-m", "shadow_burnin"]


async def cli(*args: str | Path, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *CLI, *map(str, args), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})})
    out, err = await asyncio.wait_for(proc.communicate(), 180)
    code = proc.returncode
    assert code is not None  # for the type checker: communicate() has reaped the process
    return code, out.decode(), err.decode()


def assert_nowhere(texts: dict[str, str | bytes]) -> None:
    for name, text in texts.items():
        data = text.encode() if isinstance(text, str) else text
        for key in (KEY1, KEY2):
            assert key.encode() not in data, f"{key} leaked into {name}"


def round_records(log: Path) -> list[dict[str, Any]]:
    return [r for r in map(orjson.loads, log.read_bytes().splitlines())
            if r.get("kind", "round") == "round"]


async def test_keys_sent_as_bearer_and_shown_nowhere(tmp_path: Path,
                                                    scripted_server: Any) -> None:
    a = await scripted_server()
    b = await scripted_server(diverge_after=2)  # differing rounds: re-fired, verdicts, ...
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[v1]\nurl = "{a.url}"\napi_key_env = "SB_TEST_V1_KEY"\n')
    log = tmp_path / "s.jsonl"
    env = {"SB_TEST_V1_KEY": KEY1, "SB_TEST_V2_KEY": KEY2}
    code, out, err = await cli("run", "--config", cfg, "--v2", b.url, "--v2-key-env",
                               "SB_TEST_V2_KEY", "--prompts", write_prompts(tmp_path / "p.jsonl"),
                               "--rounds", 6, "--interval", 0, "--log", log, env=env)
    assert code == 0, err
    assert len(round_records(log)) == 6 and "round 6" in out
    assert a.requests and b.requests
    assert {r.headers.get("Authorization") for r in a.requests} == {f"Bearer {KEY1}"}
    assert {r.headers.get("Authorization") for r in b.requests} == {f"Bearer {KEY2}"}
    shown = {"log": log.read_bytes(), "state": (tmp_path / "s.state").read_bytes(),
             "run stdout": out, "run stderr": err}
    code, shown["config"], _ = await cli("config", "--config", cfg, "--log", log, env=env)
    assert code == 0 and "SB_TEST_V1_KEY" in shown["config"]  # the name, not the value
    for extra in ((), ("--json",)):
        code, shown[f"bench {extra}"], _ = await cli("bench", "--log", log, *extra, env=env)
        assert code == 0 and "6" in shown[f"bench {extra}"]
    assert_nowhere(shown)


async def echo_401(request: web.Request) -> web.Response:
    """A server that refuses the key and, carelessly, repeats it everywhere."""
    auth = request.headers.get("Authorization", "")
    body = {"error": {"message": f"invalid api key: {auth}", "type": "auth", "code": 401}}
    return web.json_response(body, status=401, headers={"WWW-Authenticate": auth,
                                                        "X-Echo": auth})


async def serve(app: web.Application, ssl_context: ssl.SSLContext | None = None
                ) -> AsyncIterator[int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


@pytest.fixture
async def unauthorized() -> AsyncIterator[int]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo_401)
    async for port in serve(app):
        yield port


async def test_401_that_echoes_the_key(tmp_path: Path, unauthorized: int) -> None:
    url = f"http://127.0.0.1:{unauthorized}"
    log = tmp_path / "u.jsonl"
    code, out, err = await cli("run", "--v1", url, "--v2", url, "--v1-key-env", "K1",
                               "--v2-key-env", "K2", "--rounds", 3, "--interval", 0,
                               "--log", log, env={"K1": KEY1, "K2": KEY2})
    assert code == 0, err
    rounds = round_records(log)
    assert [r["bucket"] for r in rounds] == ["both-unreachable"] * 3
    assert all(r[s]["error"].startswith("http-401") for r in rounds for s in ("v1", "v2"))
    _, bench, _ = await cli("bench", "--log", log, "--json")
    assert_nowhere({"log": log.read_bytes(), "state": (tmp_path / "u.state").read_bytes(),
                    "stdout": out, "stderr": err, "bench": bench})


async def test_missing_key_variable_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[v2]\napi_key_env = "SB_TEST_UNSET_KEY"\n')
    env = {"SB_TEST_V1_KEY": KEY1}
    for args in (("--v1-key-env", "SB_TEST_NOT_SET_EITHER"), ("--config", cfg)):
        code, out, err = await cli("run", "--v1", "http://127.0.0.1:9", "--v2",
                                   "http://127.0.0.1:9", "--rounds", 1, "--log",
                                   tmp_path / "m.jsonl", *args, env=env)
        assert code == 2 and len(err.splitlines()) == 1, err
        assert "SB_TEST_NOT_SET_EITHER" in err or "SB_TEST_UNSET_KEY" in err
        assert_nowhere({"stdout": out, "stderr": err})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml"]  # no log, state, lock


# --- TLS -------------------------------------------------------------------------------


def self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "shadow-burnin test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


async def answer(request: web.Request) -> web.StreamResponse:
    if request.path == "/v1/models":
        return await respond(Exchange(request, Reply("models", "m", "tls-model", "tls-model"),
                                      False), None)
    body = orjson.loads(await request.read())
    reply = Reply("chat", "tls-1", "tls-model", "over TLS\nsecond line")
    return await respond(Exchange(request, reply, body.get("stream") is True), None)


@pytest.fixture
async def https(tmp_path: Path) -> AsyncIterator[tuple[int, Path]]:
    cert, key = self_signed(tmp_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    async for port in serve(app, ctx):
        yield port, cert


async def test_https_verified_unless_insecure(tmp_path: Path, https: tuple[int, Path]) -> None:
    port, cert = https
    url = f"https://127.0.0.1:{port}"
    base = ("run", "--v1", url, "--v2", url, "--rounds", 2, "--interval", 0, "--quiet")
    code, _out, err = await cli(*base, "--log", tmp_path / "v.jsonl")
    assert code == 0, err
    for r in round_records(tmp_path / "v.jsonl"):
        assert r["bucket"] == "both-unreachable"
        for side in ("v1", "v2"):
            assert r[side]["error"].startswith("tls: certificate verify failed"), r[side]
            assert "self-signed" in r[side]["error"]
    code, _out, err = await cli(*base, "--insecure", "--log", tmp_path / "i.jsonl")
    assert code == 0, err
    rounds = round_records(tmp_path / "i.jsonl")
    assert [r["bucket"] for r in rounds] == ["exact", "exact"]
    assert rounds[0]["v1"]["text"] == "over TLS\nsecond line"
    # verification is real, not "always fail": trusting the certificate makes it pass
    code, _out, err = await cli(*base, "--log", tmp_path / "t.jsonl",
                                env={"SSL_CERT_FILE": str(cert)})
    assert code == 0, err
    assert [r["bucket"] for r in round_records(tmp_path / "t.jsonl")] == ["exact", "exact"]
