"""Shared fixtures of the test suite.

Scripted OpenAI-compatible servers (tests/servers/scripted.py):

- ``scripted_server``: async factory, ``server = await scripted_server(**options)`` returns
  a started in-process ``ScriptedServer`` (``.url``, ``.requests``, ``await .set_fault()``);
  every server is stopped at teardown.
- ``spawn_scripted``: factory, ``url, proc = spawn_scripted(**flags)`` starts
  ``python -m tests.servers.scripted`` (``delay_ms=5`` → ``--delay-ms 5``, ``True`` → bare
  flag) and returns once it printed READY; every process is reaped at teardown (also one
  the test killed itself). ``spawn_scripted_process`` / ``reap_process`` are the plain
  functions, for code outside fixtures.
"""

from __future__ import annotations

import select
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from tests.procs import stop_process
from tests.servers.scripted import REPO_ROOT, ScriptedServer

Proc = subprocess.Popen[bytes]


def spawn_scripted_process(*, timeout_s: float = 15.0, **flags: Any) -> tuple[str, Proc]:
    """Start the scripted server as a subprocess; (url, process) once it printed READY."""
    argv = [sys.executable, "-m", "tests.servers.scripted"]
    flags.setdefault("port", 0)
    for key, value in flags.items():
        if value is None or value is False:
            continue
        opt = "--" + key.replace("_", "-")
        argv += [opt] if value is True else [opt, str(value)]
    with tempfile.TemporaryFile() as errlog:
        proc = subprocess.Popen(argv, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=errlog,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        assert proc.stdout is not None
        line, deadline = b"", time.monotonic() + timeout_s
        while time.monotonic() < deadline and proc.poll() is None:
            if select.select([proc.stdout], [], [], 0.05)[0]:
                line = proc.stdout.readline()
                break
        if line.startswith(b"READY "):
            return line.split()[1].decode(), proc
        reap_process(proc)
        errlog.seek(0)
        tail = errlog.read()[-2000:].decode(errors="replace")
    raise RuntimeError(f"scripted server did not start ({argv!r}): {line!r}\n{tail}")


def reap_process(proc: Proc, timeout_s: float = 5.0) -> int:
    """SIGTERM, then SIGKILL if needed; always waits (``tests.procs.stop_process``).
    Returns the exit status."""
    stop_process(proc, timeout_s)
    return proc.returncode


@pytest.fixture
async def scripted_server() -> AsyncIterator[Callable[..., Awaitable[ScriptedServer]]]:
    servers: list[ScriptedServer] = []

    async def start(**options: Any) -> ScriptedServer:
        server = ScriptedServer(**options)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in reversed(servers):
        await server.stop()


@pytest.fixture
def spawn_scripted() -> Iterator[Callable[..., tuple[str, Proc]]]:
    procs: list[Proc] = []

    def spawn(**flags: Any) -> tuple[str, Proc]:
        url, proc = spawn_scripted_process(**flags)
        procs.append(proc)
        return url, proc

    yield spawn
    for proc in procs:
        reap_process(proc)
