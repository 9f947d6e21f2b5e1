"""Helpers for CLI tests: CliRunner invocations and ``run`` as a real subprocess."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner, Result

from shadow_burnin.cli import cli


def invoke(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], env=env, catch_exceptions=False)


def read_log(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def digest_tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def write_prompts(path: Path, n: int = 6) -> Path:
    lines = [orjson.dumps({"id": f"p{i}", "category": f"c{i % 3}", "prompt": f"question {i} ü"})
             for i in range(n)]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@pytest.fixture
def run_proc() -> Iterator:
    """Start ``shadow-burnin run ...`` as a subprocess (own session); reaped at teardown."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str | Path) -> subprocess.Popen[bytes]:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        proc = subprocess.Popen([sys.executable, "-m", "shadow_burnin", *map(str, args)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                start_new_session=True)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
