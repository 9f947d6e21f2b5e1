"""The command table: every command reachable, loaded only when used."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import shadow_burnin.cli as cli_pkg
from shadow_burnin.cli import COMMAND_MODULES, cli

from .conftest import invoke


def test_table_names_every_command_of_every_module() -> None:
    defined = {}
    for info in pkgutil.iter_modules(cli_pkg.__path__):
        module = importlib.import_module(f"shadow_burnin.cli.{info.name}")
        for command in getattr(module, "COMMANDS", []):
            defined[command.name] = info.name
    assert defined == COMMAND_MODULES


def test_help_lists_every_command() -> None:
    out = invoke("--help").output
    for name in COMMAND_MODULES:
        assert f"  {name} " in out


def test_unknown_command_is_a_usage_error() -> None:
    from click.testing import CliRunner

    result = CliRunner().invoke(cli, ["no-such-command"])
    assert result.exit_code == 2
    assert "No such command 'no-such-command'" in result.output


def test_bench_does_not_load_the_http_client(tmp_path: Path) -> None:
    log = tmp_path / "empty.jsonl"
    log.write_bytes(b"")
    code = ("import sys; from shadow_burnin.cli import main; sys.argv = ['halo', 'bench', "
            "'--log', sys.argv[1]];\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('aiohttp', 'shadow_burnin.io.http.client') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, str(log)], capture_output=True,
                         text=True, check=True).stdout
    assert "no rounds" in out
    assert out.strip().endswith("[]")
