"""``shadow-burnin cutover`` / ``rollback`` from the command line: exit codes, output, and
``gates``/``bench`` showing the cutover; real Caddy, scripted servers as subprocesses."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.cli.conftest import invoke
from tests.io.proxy import flipkit as kit
from tests.io.proxy.caddyproc import CaddyProcess, dial, free_port, start_caddyfile, start_json


@pytest.fixture
def servers(spawn_scripted: Callable[..., tuple[str, Any]]) -> tuple[str, str]:
    v1, _ = spawn_scripted()
    v2, _ = spawn_scripted(diverge_after=0, salt=kit.SALT)
    return v1, v2


@pytest.fixture
def caddy(tmp_path: Path, servers: tuple[str, str]) -> Iterator[CaddyProcess]:
    (tmp_path / "caddy").mkdir()
    with start_caddyfile(tmp_path / "caddy", dial(servers[0])) as c:
        yield c


def setup(tmp_path: Path, servers: tuple[str, str], admin: str, **log_kw: Any) -> Path:
    log = kit.write_log(tmp_path / "burnin.jsonl", **log_kw)
    prompts = kit.write_prompts(tmp_path / "prompts.jsonl")
    return kit.write_config(tmp_path / "c.toml", v1=servers[0], v2=servers[1], log=log,
                            prompts=prompts, admin=admin)


def test_help_has_the_exit_code_table() -> None:
    out = invoke("cutover", "--help").output
    for line in ("0  done", "1  gates red", "2  bad input", "3  gates waiting",
                 "4  flipped, then rolled back", "5  Caddy's state is unknown"):
        assert line in out
    assert "Example:" in out
    assert "5  applied, but v1" in invoke("rollback", "--help").output


def test_red_gates_exit_1_and_nothing_changes(tmp_path: Path, servers: tuple[str, str],
                                              caddy: CaddyProcess) -> None:
    before = caddy.live_config()
    cfg = setup(tmp_path, servers, caddy.admin_url, no_match=20)
    r = invoke("cutover", "--config", cfg)
    assert r.exit_code == 1
    assert "NO-GO" in r.output and "nothing changed" in r.output
    assert caddy.live_config() == before


def test_waiting_gates_exit_3(tmp_path: Path, servers: tuple[str, str], caddy: CaddyProcess
                              ) -> None:
    cfg = setup(tmp_path, servers, caddy.admin_url, exact=10, tell=0)
    r = invoke("cutover", "--config", cfg)
    assert r.exit_code == 3 and "WAITING" in r.output


def test_cutover_and_rollback_show_in_gates_and_bench(tmp_path: Path, servers: tuple[str, str],
                                                      caddy: CaddyProcess) -> None:
    cfg = setup(tmp_path, servers, caddy.admin_url)
    r = invoke("cutover", "--config", cfg)
    assert r.exit_code == 0, r.output
    assert "cut over: /v1/* → v2" in r.output and "✓ /v1/… → v2" in r.output
    assert "reload caddy" in r.output  # started from a Caddyfile: warned
    g = invoke("gates", "--config", cfg, "--write", tmp_path / "CUTOVER.md")
    assert g.exit_code == 0 and "cut over at" in g.output
    md = (tmp_path / "CUTOVER.md").read_text()
    assert "## Cutover" in md and "cut over at" in md and "points at v2 now" in md
    j = orjson.loads(invoke("gates", "--config", cfg, "--json").output)
    assert j["cutover"]["on"] == "v2"
    assert "cut over at" in invoke("bench", "--config", cfg).output
    again = invoke("cutover", "--config", cfg)
    assert again.exit_code == 0 and "already cut over" in again.output
    back = invoke("rollback", "--config", cfg, "--reason", "3 a.m. page")
    assert back.exit_code == 0, back.output
    assert "rolled back: /v1/* → v1" in back.output
    g = invoke("gates", "--config", cfg)
    assert "rolled back at" in g.output and "3 a.m. page" in g.output
    j = orjson.loads(invoke("bench", "--config", cfg, "--json").output)
    assert j["cutover"]["on"] == "v1" and j["cutover"]["rollbacks"] == 1


def test_dry_run_prints_the_diff(tmp_path: Path, servers: tuple[str, str],
                                 caddy: CaddyProcess) -> None:
    before = caddy.live_config()
    cfg = setup(tmp_path, servers, caddy.admin_url)
    r = invoke("cutover", "--config", cfg, "--dry-run", "--caddyfile", caddy.path)
    assert r.exit_code == 0, r.output
    assert "dry run: nothing changed" in r.output
    assert re.search(r'^\+\s+"/v1-legacy/\*"', r.output, re.M)  # the live config's routes
    assert re.search(r"^\+\s+handle /v1-legacy/\* \{", r.output, re.M)  # the Caddyfile
    assert caddy.live_config() == before
    assert "v1-legacy" not in caddy.path.read_text()


def test_unreachable_admin_is_one_line_exit_2(tmp_path: Path, servers: tuple[str, str]
                                              ) -> None:
    cfg = setup(tmp_path, servers, f"http://127.0.0.1:{free_port()}")
    r = invoke("cutover", "--config", cfg)
    assert r.exit_code == 2
    [line] = r.stderr.strip().splitlines()
    assert line.startswith("shadow-burnin: error: Caddy admin API at ") and "unreachable" in line
    r = invoke("rollback", "--config", cfg)
    assert r.exit_code == 2 and "unreachable" in r.stderr


def test_force_needs_a_reason_and_bad_watch_is_exit_2(tmp_path: Path, servers: tuple[str, str],
                                                      caddy: CaddyProcess) -> None:
    cfg = setup(tmp_path, servers, caddy.admin_url, no_match=20)
    r = invoke("cutover", "--config", cfg, "--force")
    assert r.exit_code == 2 and "--reason" in r.stderr
    r = invoke("cutover", "--config", cfg, "--watch", "soon")
    assert r.exit_code == 2 and "--watch" in r.stderr
    r = invoke("cutover", "--config", cfg, "--route", "/v1")
    assert r.exit_code == 2 and "cutover.route" in r.stderr


def test_hostile_route_text_from_caddy_is_escaped(tmp_path: Path, servers: tuple[str, str]
                                                  ) -> None:
    """Caddy's config is outside data: a path matcher carrying terminal escapes must not
    reach the terminal raw when it is listed in an error."""
    (tmp_path / "caddy").mkdir()
    with start_json(tmp_path / "caddy", dial(servers[0])) as c:
        config = c.live_config()
        config["apps"]["http"]["servers"]["api"]["routes"][0]["match"] = [
            {"path": ["/v1/\x1b]0;pwned\x07*"]}]
        req = urllib.request.Request(c.admin_url + "/load", data=orjson.dumps(config),
                                     headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=10).close()
        cfg = setup(tmp_path, servers, c.admin_url)
        r = invoke("cutover", "--config", cfg)
    assert r.exit_code == 2
    assert "\x1b" not in r.stderr and "\x07" not in r.stderr
    assert "⟨U+001B⟩" in r.stderr
