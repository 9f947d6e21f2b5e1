"""Start and stop real local llama.cpp servers (for ``demo`` and the e2e tests).

v1 is llama.cpp's C++ ``llama-server``, v2 is ``llama-cpp-python``'s server, both on the
same gguf, context size and a single slot. Each process runs in its own process group
(``stop`` takes its children too); an ``atexit`` hook and a parent-death signal make sure
none outlives us.  ``with DemoPair(log_dir) as pair: pair.v1.url, pair.v2.url``
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from shadow_burnin.errors import ServerStartError
from shadow_burnin.io.servers.llama_build import (
    CTX_SIZE,
    cache_dir,
    data_dir,
    ensure_llama_server,
    ensure_model,
    llama_cpp_python_argv,
    llama_server_argv,
    log_tail,
    server_env,
)

__all__ = [
    "CTX_SIZE", "DemoPair", "LocalServer", "cache_dir", "data_dir", "demo_pair",
    "ensure_llama_server", "ensure_model", "free_port", "llama_cpp_python_server",
    "llama_server_cpp",
]

HOST = "127.0.0.1"
ArgvBuilder = Callable[[int], Sequence[str]]

_LIVE: weakref.WeakSet[LocalServer] = weakref.WeakSet()


def _death_signal_hook() -> Callable[[], None] | None:
    """preexec hook: the child gets SIGTERM when its parent dies, even by SIGKILL (Linux).

    Used only from the main thread: PR_SET_PDEATHSIG fires when the forking *thread* ends.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def hook() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)

    return hook


_PDEATHSIG = _death_signal_hook()


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _port_bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


class LocalServer:
    """One server process on ``127.0.0.1``; ready once ``GET /v1/models`` answers 200."""

    def __init__(
        self,
        name: str,
        argv_builder: ArgvBuilder,
        model_path: Path | None = None,
        *,
        port: int | None = None,
        log_path: Path | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        kind: str = "custom",
    ) -> None:
        self.name = name
        self.kind = kind
        self.model_path = model_path
        self.argv_builder = argv_builder
        self.extra_args = list(extra_args)
        self.env = dict(env) if env is not None else None
        self.port = port
        self.log_path = log_path or (data_dir() / "logs" / f"{name}.log")
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_start = 0
        self.detached = False  # True: outlives this process (demo --keep-servers)

    @property
    def url(self) -> str:
        if self.port is None:
            raise ServerStartError(f"{self.name}: no port yet (call start() first)")
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def argv(self) -> list[str]:
        if self.port is None:
            raise ServerStartError(f"{self.name}: no port chosen")
        return [*map(str, self.argv_builder(self.port)), *self.extra_args]

    def log_tail(self, lines: int = 20) -> str:
        """The last lines this server wrote since its latest start."""
        return log_tail(self.log_path, lines, self._log_start)

    def start(self, timeout: float = 120.0) -> LocalServer:
        """Start and wait until ready; on failure stop it and raise ServerStartError."""
        if self.running:
            return self
        if self.port is None:
            self.port = free_port()
        else:
            self._wait_port_free(min(10.0, timeout))
        argv = self.argv()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._log_start = log.tell()
            log.write(f"# {time.strftime('%Y-%m-%dT%H:%M:%S')} $ {' '.join(argv)}\n".encode())
            log.flush()
            main = threading.current_thread() is threading.main_thread()
            try:
                self._proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    env=self.env, start_new_session=True,
                    preexec_fn=_PDEATHSIG if main and not self.detached else None,
                )
            except OSError as exc:
                raise ServerStartError(f"{self.name}: cannot run {argv[0]}: {exc}") from exc
        if not self.detached:
            _LIVE.add(self)
        self._wait_ready(timeout)
        return self

    def _wait_port_free(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not _port_bindable(int(self.port or 0)):
            if time.monotonic() > deadline:
                raise ServerStartError(f"{self.name}: port {self.port} is still in use")
            time.sleep(0.1)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                code = proc.returncode if proc is not None else None
                self._reap()
                raise ServerStartError(
                    f"{self.name} exited with status {code} before it was ready; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            if self._models_ok():
                return
            if time.monotonic() > deadline:
                self.stop()
                raise ServerStartError(
                    f"{self.name} was not ready on {self.url} after {timeout:.0f} s; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def _models_ok(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/v1/models", timeout=2) as resp:
                return bool(resp.status == 200)
        except (OSError, urllib.error.URLError, ValueError):
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, wait, then SIGKILL; always reaped. Idempotent."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            self._signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout)
        self._reap()

    def kill(self) -> None:
        """SIGKILL the process group at once (simulates a crash) and reap it."""
        if self._proc is not None:
            self._reap()

    def restart(self, timeout: float = 120.0) -> LocalServer:
        """Stop (if running) and start again on the same port."""
        self.stop()
        return self.start(timeout)

    def _signal(self, sig: signal.Signals) -> None:
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)  # start_new_session: pgid == pid

    def _reap(self) -> None:
        """SIGKILL whatever is left of the group and wait for the process."""
        proc = self._proc
        if proc is None:
            return
        self._signal(signal.SIGKILL)
        proc.wait()
        self._proc = None
        _LIVE.discard(self)

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid={self.pid} url={self.url}" if self.running else "stopped"
        return f"<LocalServer {self.name} ({self.kind}) {state}>"


@atexit.register
def _stop_all() -> None:
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.stop(timeout=5)


# ---------------------------------------------------------------------- factories


def llama_server_cpp(
    model: Path,
    *,
    threads: int = 1,
    ctx_size: int = CTX_SIZE,
    name: str = "llama-server",
    port: int | None = None,
    log_path: Path | None = None,
    binary: Path | None = None,
    extra_args: Sequence[str] = (),
) -> LocalServer:
    """llama.cpp's C++ server; flags (and why) in :func:`llama_server_argv`."""
    exe = binary or ensure_llama_server()

    def build(port: int) -> list[str]:
        return llama_server_argv(exe, model, HOST, port, threads=threads, ctx_size=ctx_size)

    return LocalServer(name, build, model, port=port, log_path=log_path,
                       extra_args=extra_args, env=server_env(exe), kind="llama-server")


def llama_cpp_python_server(
    model: Path,
    *,
    threads: int = 2,
    batch: int = 1,
    ctx_size: int = CTX_SIZE,
    name: str = "llama-cpp-python",
    port: int | None = None,
    log_path: Path | None = None,
    extra_args: Sequence[str] = (),
) -> LocalServer:
    """llama-cpp-python's OpenAI-compatible server; see :func:`llama_cpp_python_argv`."""

    def build(port: int) -> list[str]:
        return llama_cpp_python_argv(model, HOST, port, threads=threads, batch=batch,
                                     ctx_size=ctx_size)

    return LocalServer(name, build, model, port=port, log_path=log_path,
                       extra_args=extra_args, kind="llama-cpp-python")


def demo_pair(
    log_dir: Path, progress: Callable[[str], None] | None = None
) -> tuple[LocalServer, LocalServer]:
    """(v1, v2): C++ llama-server and llama-cpp-python on the same gguf; not yet started.

    Builds the cached llama-server the first time (about 8 min; ``progress`` hears it).
    """
    model = ensure_model()
    exe = ensure_llama_server(progress)
    v1 = llama_server_cpp(model, name="v1", binary=exe, log_path=log_dir / "v1-llama-server.log")
    v2 = llama_cpp_python_server(model, name="v2", log_path=log_dir / "v2-llama-cpp-python.log")
    return v1, v2


class DemoPair:
    """Both demo servers, started and stopped together (context manager)."""

    def __init__(self, log_dir: Path, progress: Callable[[str], None] | None = None) -> None:
        self.log_dir = log_dir
        self.v1, self.v2 = demo_pair(log_dir, progress)

    def start(self, timeout: float = 180.0) -> DemoPair:
        try:
            for server in (self.v1, self.v2):
                server.start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def revive(self, timeout: float = 180.0) -> None:
        """Restart (on the same port) whichever side is not running."""
        for server in (self.v1, self.v2):
            if not server.running:
                server.start(timeout)

    def stop(self) -> None:
        for server in (self.v1, self.v2):
            with contextlib.suppress(Exception):
                server.stop()

    def __enter__(self) -> DemoPair:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
