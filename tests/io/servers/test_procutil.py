"""The entry points' shared preamble (``procutil.entry_preamble``): each refusal is one
line on stderr and its own exit code, in a real subprocess (the preamble resets signal
handlers and asks for the parent-death signal, so it never runs in the test process)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

SRC = str(Path(__file__).resolve().parents[3] / "src")
ENTRIES = ["shadow_burnin.io.servers.serve_xllama", "shadow_burnin.io.servers.serve_mistral"]


def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=SRC)
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env,
                          timeout=120, check=False)


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.parametrize("args", [[], ["{not json"], ["[1]"], ['{"port": 1}'], ["{}", "{}"]])
def test_bad_settings_are_usage_errors(entry: str, args: list[str]) -> None:
    got = run(["-m", entry, *args])
    assert got.returncode == 2, got.stderr
    assert got.stderr.strip().splitlines() == [
        f"usage: python -m {entry} '<settings json with \"model\">'"]


@pytest.mark.parametrize("entry", ENTRIES)
def test_a_missing_model_exits_3(entry: str, tmp_path: Path) -> None:
    missing = tmp_path / "no-such.gguf"
    got = run(["-m", entry, orjson.dumps({"model": str(missing), "port": 1}).decode()])
    assert got.returncode == 3
    assert got.stderr.strip() == f"model file not found: {missing}"


def test_a_missing_engine_exits_4_naming_the_extra(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    code = ("import sys\nfrom shadow_burnin.io.servers.procutil import entry_preamble\n"
            "r = entry_preamble(sys.argv[1:], 'x.serve', 'shadow_burnin_no_such_engine')\n"
            "sys.exit(r if isinstance(r, int) else 0)\n")
    got = run(["-c", code, orjson.dumps({"model": str(model)}).decode()])
    assert got.returncode == 4
    assert "cannot import shadow_burnin_no_such_engine" in got.stderr
    assert "install the demo extra" in got.stderr


def test_good_settings_return_them_and_the_engine(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    code = ("import sys, json\nfrom shadow_burnin.io.servers.procutil import entry_preamble\n"
            "cfg, mod = entry_preamble(sys.argv[1:], 'x.serve', 'json')\n"
            "print(cfg['model'], mod.__name__)\n")
    got = run(["-c", code, orjson.dumps({"model": str(model)}).decode()])
    assert got.returncode == 0, got.stderr
    assert got.stdout.split() == [str(model), "json"]
