"""Config: TOML + flags, validated; unknown keys and wrong types name file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from shadow_burnin.config import default_state_for, fingerprint, load
from shadow_burnin.errors import ConfigError
from shadow_burnin.values import parse_duration
from tests.cli.conftest import invoke


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "burnin.toml"
    p.write_text(text)
    return p


def test_defaults() -> None:
    cfg = load(None)
    assert cfg.v1.url == "http://127.0.0.1:8080" and cfg.v2.url == "http://127.0.0.1:8180"
    assert (cfg.request.api, cfg.request.max_tokens, cfg.request.stream) == ("chat", 64, True)
    assert cfg.request.timeout == 120.0 and cfg.run.interval == 2.5 and cfg.run.rounds is None
    assert cfg.paths.log.endswith("shadow-burnin/shadow-burnin.jsonl")
    assert cfg.paths.state.endswith("shadow-burnin/shadow-burnin.state")


def test_file_and_flags(tmp_path: Path) -> None:
    p = write(tmp_path, """
[v1]
url = "http://10.0.0.1:8080"
model = "gemma"
[v2]
url = "https://rust.example:8180"
api_key_env = "V2_KEY"
[request]
api = "completions"
max_tokens = 32
[request.extra]
cache_prompt = false
[run]
duration = "72h"
interval = 1
""")
    cfg = load(p, {"request": {"max_tokens": 16}, "v2": {"model": None}})
    assert cfg.v1.model == "gemma" and cfg.v2.api_key_env == "V2_KEY"
    assert cfg.request.max_tokens == 16  # the flag wins
    assert cfg.request.extra == {"cache_prompt": False}
    assert cfg.run.duration == 72 * 3600 and cfg.run.interval == 1


@pytest.mark.parametrize(("text", "message"), [
    ("[v1]\nurl = 'http://a'\nmodle = 'x'\n", "unknown key v1.modle"),
    ("[runn]\n", "unknown section [runn]"),
    ("[request]\nmax_tokens = '64'\n", "request.max_tokens must be an integer"),
    ("[request]\nstream = 1\n", "request.stream must be true or false"),
    ("[run]\nconcurrent = 'yes'\n", "run.concurrent must be true or false"),
    ("[v2]\nurl = '127.0.0.1:8180'\n", "v2.url must be an http:// or https:// URL"),
    ("[request]\napi = 'grpc'\n", "request.api must be 'chat', 'completions' or 'native'"),
    ("[run]\nduration = 'forever'\n", "run.duration: expected a duration"),
    ("[request]\nmax_tokens = 0\n", "request.max_tokens must be in 1..1_000_000"),
    ("[request]\nmax_tokens = 9223372036854775807\n", "request.max_tokens must be in"),
    ("[run]\nrounds = 9223372036854775807\n", "run.rounds must be in"),
    ("[run]\nconcurrency = 100000\n", "run.concurrency must be in"),
    ("[v1]\nurl = 'http://127.0.0.1:99999'\n", "v1.url: invalid port"),
    ("[v1]\nurl = 'http://127.0.0.1:8080garbage'\n", "v1.url: invalid port"),
    ("[v1]\nurl = 'http://:8080'\n", "v1.url: no valid host"),
    ("[v1]\nurl = 'http://'\n", "v1.url must be an http:// or https:// URL"),
    ("[v1]\nurl = 'http://127.0.0.1:8080/v1?x=1'\n", "v1.url: a base URL takes no query"),
    ("[v1]\nurl = 'http://a b:8080'\n", "v1.url: the URL contains whitespace"),
    ("[forensics]\nv1b = 'http://h:0'\n", "forensics.v1b: port must be 1..65535"),
    ("[halt]\nwebhook = 'http://h:65536/x'\n", "halt.webhook: invalid port"),
    ("[run]\nduration = '99999999d'\n", "run.duration: at most"),
    ("[v1\nurl=", "invalid TOML"),
])
def test_bad_config(tmp_path: Path, text: str, message: str) -> None:
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load(p)
    assert message in str(err.value)
    assert str(p) in str(err.value)


def test_durations() -> None:
    assert parse_duration("72h") == 259200
    assert parse_duration("1h30m") == 5400
    assert parse_duration("2d") == 172800
    assert parse_duration(90) == 90
    for bad in ("", "h", "-5s", "0"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_fingerprint_excludes_secrets_and_timeouts(tmp_path: Path) -> None:
    a = load(None, {"v2": {"api_key_env": "K1"}, "request": {"timeout": 5.0}})
    b = load(None, {"v2": {"api_key_env": "K2"}, "request": {"timeout": 50.0}})
    c = load(None, {"request": {"max_tokens": 65}})
    fa, fb, fc = (fingerprint(x.fingerprint_fields("d")) for x in (a, b, c))
    assert fa == fb != fc
    assert fingerprint(a.fingerprint_fields("d")) != fingerprint(a.fingerprint_fields("e"))


def test_state_defaults_beside_log() -> None:
    assert default_state_for("/x/run.jsonl") == "/x/run.state"
    assert default_state_for("/x/run.log") == "/x/run.log.state"
    assert load(None, {"paths": {"log": "/x/a.jsonl"}}).paths.state == "/x/a.state"


def test_config_command(tmp_path: Path) -> None:
    p = write(tmp_path, "[request]\napi = 'completions'\n[request.extra]\nn_probs = 0\n")
    res = invoke("config", "--config", p, "--log", tmp_path / "l.jsonl")
    assert res.exit_code == 0
    assert 'api = "completions"' in res.stdout and "n_probs = 0" in res.stdout
    assert f'log = "{tmp_path / "l.jsonl"}"' in res.stdout
    bad = invoke("config", "--config", write(tmp_path, "[x]\n"))
    assert bad.exit_code == 2
    assert bad.stderr.strip() == f"shadow-burnin: error: {p}: unknown section [x]"


def test_key_pasted_as_env_name_is_refused_and_not_echoed(tmp_path: Path) -> None:
    secret = "sk-live-0123456789abcdef"
    p = write(tmp_path, f"[v2]\napi_key_env = '{secret}'\n")
    with pytest.raises(ConfigError) as err:
        load(p)
    assert "v2.api_key_env" in str(err.value) and secret not in str(err.value)
    res = invoke("config", "--config", p)
    assert res.exit_code == 2 and secret not in res.stdout + res.stderr
    assert load(None, {"v1": {"api_key_env": "V1_API_KEY"}}).v1.api_key_env == "V1_API_KEY"


@pytest.mark.parametrize("where", ["[v1]\nurl", "[v2]\nurl", "[forensics]\nv1b",
                                   "[halt]\nwebhook"])
def test_credentials_in_urls_refused_and_never_shown(tmp_path: Path, where: str) -> None:
    p = write(tmp_path, f"{where} = 'http://admin:hunter2pass@127.0.0.1:8080/'\n")
    res = invoke("config", "--config", p)
    assert res.exit_code == 2
    assert "hunter2pass" not in res.stdout + res.stderr
    assert "api_key_env" in res.stderr and len(res.stderr.splitlines()) == 1


def test_credentials_in_url_flag_refused_with_api_key_env(tmp_path: Path) -> None:
    """The crash of the issue: a credentialed URL combined with api_key_env."""
    res = invoke("run", "--v1", "http://u:s3cr3tpw@127.0.0.1:9", "--v1-key-env", "K",
                 "--log", tmp_path / "b.jsonl", "--rounds", "1", env={"K": "abcdef"})
    assert res.exit_code == 2
    assert "s3cr3tpw" not in res.stdout + res.stderr
    assert res.stderr.startswith("shadow-burnin: error: command line: v1.url: credentials")
    assert not (tmp_path / "b.jsonl").exists()


def test_good_urls_accepted() -> None:
    for url in ("http://127.0.0.1:8080", "https://api.example.com/v1", "http://[::1]:8080/",
                "http://localhost"):
        assert load(None, {"v1": {"url": url}}).v1.url == url
    cfg = load(None, {"halt": {"webhook": "https://hooks.example.com/x?token=abc"}})
    assert cfg.halt.webhook is not None


def test_no_import_cycle_between_config_modules() -> None:
    import ast

    import shadow_burnin.config_sections as sections

    tree = ast.parse(Path(sections.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "shadow_burnin.config" not in imported
