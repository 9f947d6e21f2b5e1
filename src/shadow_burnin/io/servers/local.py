"""One local server process: the interface every demo/test server implements.

A :class:`LocalServer` runs one command on a free loopback port in its own process group
(``stop`` takes its children too), with a parent-death signal and an ``atexit`` hook so
no server outlives us, and its output in a log file whose tail is quoted when it fails
to start. It is ready once ``GET <ready_path>`` answers 200. Implementations differ only
in the command they run: :mod:`.xllama` (llama.cpp's C++ server via xllamacpp),
:mod:`.mistral_front` (mistral.rs behind an OpenAI-compatible front), :mod:`.llama`
(a compiled ``llama-server`` and llama-cpp-python, the opt-in pair).
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
from shadow_burnin.io.servers.llama_build import data_dir, log_tail

HOST = "127.0.0.1"
DETACHED_ENV = "SHADOW_BURNIN_SERVER_DETACHED"  # set for servers meant to outlive us
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


def _child_hook(*, death_signal: bool) -> Callable[[], None]:
    """preexec hook: unblock the signals the parent blocked around the fork, and (unless
    detached) ask for the parent-death signal."""
    pdeath = _PDEATHSIG if death_signal else None

    def hook() -> None:
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        if pdeath is not None:
            pdeath()

    return hook


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
    """One server process on ``127.0.0.1``; ready once ``GET <ready_path>`` answers 200."""

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
        ready_path: str = "/v1/models",
    ) -> None:
        self.name = name
        self.kind = kind
        self.ready_path = ready_path
        self.model_path = model_path
        self.argv_builder = argv_builder
        self.extra_args = list(extra_args)
        self.env = dict(env) if env is not None else None
        self.port = port
        self.log_path = log_path or (data_dir() / "logs" / f"{name}.log")
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_start = 0
        self.detached = False  # True: outlives this process (demo --keep-servers)
        self._spawned_at = 0.0
        self.started_in: float | None = None  # seconds from spawn to ready (last start)

    @property
    def url(self) -> str:
        if self.port is None:
            raise ServerStartError(f"{self.name}: no port yet (call start() first)")
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def revive(self, timeout: float = 120.0) -> None:
        """Start again (same port) if not running."""
        if not self.running:
            self.start(timeout)

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
        self.spawn(min(10.0, timeout))
        self.wait_ready(timeout)
        return self

    def spawn(self, port_timeout: float = 10.0) -> LocalServer:
        """Start the process without waiting for it to be ready (see :meth:`poll_ready`)."""
        if self.running:
            return self
        if self.port is None:
            self.port = free_port()
        else:
            self._wait_port_free(port_timeout)
        argv = self.argv()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._log_start = log.tell()
            log.write(f"# {time.strftime('%Y-%m-%dT%H:%M:%S')} $ {' '.join(argv)}\n".encode())
            log.flush()
            main = threading.current_thread() is threading.main_thread()
            env = self.env
            if self.detached:  # the entry points then skip their own parent-death signal
                env = {**(env if env is not None else os.environ), DETACHED_ENV: "1"}
            # Ctrl-C must not land between the fork and ``self._proc`` being set (the child
            # would be unknown to stop()): SIGINT/SIGTERM wait until the Popen object is
            # ours; the child unblocks them before it execs.
            blocked = {signal.SIGINT, signal.SIGTERM}
            old = signal.pthread_sigmask(signal.SIG_BLOCK, blocked) if main else None
            try:
                self._proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    env=env, start_new_session=True,
                    preexec_fn=_child_hook(death_signal=not self.detached) if main else None,
                )
            except OSError as exc:
                raise ServerStartError(f"{self.name}: cannot run {argv[0]}: {exc}") from exc
            finally:
                if old is not None:
                    signal.pthread_sigmask(signal.SIG_SETMASK, old)
        self._spawned_at = time.monotonic()
        if not self.detached:
            _LIVE.add(self)
        return self

    def _wait_port_free(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not _port_bindable(int(self.port or 0)):
            if time.monotonic() > deadline:
                raise ServerStartError(f"{self.name}: port {self.port} is still in use")
            time.sleep(0.1)

    def poll_ready(self) -> bool:
        """One readiness check: True when ready; raises (reaped) if the process exited."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            code = proc.returncode if proc is not None else None
            self._reap()
            raise ServerStartError(
                f"{self.name} exited with status {code} before it was ready; "
                f"log {self.log_path}:\n{self.log_tail()}"
            )
        if self._ready_ok():
            self.started_in = time.monotonic() - self._spawned_at
            return True
        return False

    def fail_not_ready(self, timeout: float) -> ServerStartError:
        """Stop a server that missed its deadline; the error to raise (with its log tail)."""
        self.stop()
        return ServerStartError(
            f"{self.name} was not ready on {self.url} after {timeout:.0f} s; "
            f"log {self.log_path}:\n{self.log_tail()}"
        )

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.poll_ready():
            if time.monotonic() > deadline:
                raise self.fail_not_ready(timeout)
            time.sleep(0.1)

    def _ready_ok(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}{self.ready_path}", timeout=2) as resp:
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


Progress = Callable[[str], None]


class ServerPair:
    """v1 and v2, started together (both spawned, then awaited) and always both stopped.

    ``progress`` hears a line when each side is ready and every few seconds while one is
    still loading, so a start-up is never silent. Context manager; ``revive()`` restarts
    (same port) whichever side is down.
    """

    def __init__(self, v1: LocalServer, v2: LocalServer,
                 progress: Progress | None = None) -> None:
        self.v1, self.v2 = v1, v2
        self.progress = progress

    @property
    def servers(self) -> tuple[LocalServer, LocalServer]:
        return self.v1, self.v2

    def _say(self, message: str) -> None:
        if self.progress is not None:
            self.progress(message)

    def start(self, timeout: float = 180.0, *, every: float = 3.0) -> ServerPair:
        try:
            waiting = [s for s in self.servers if not s.running]
            for server in waiting:
                server.spawn()
            started = time.monotonic()
            next_note = started + every
            while waiting:
                for server in list(waiting):
                    if server.poll_ready():
                        waiting.remove(server)
                        self._say(f"{server.name} ready in {server.started_in:.1f} s "
                                  f"({server.kind}, {server.url})")
                now = time.monotonic()
                if waiting and now - started > timeout:
                    raise waiting[0].fail_not_ready(timeout)
                if waiting and now >= next_note:
                    names = ", ".join(f"{s.name} ({s.kind})" for s in waiting)
                    self._say(f"still loading: {names} … {now - started:.0f} s")
                    next_note = now + every
                if waiting:
                    time.sleep(0.1)
        except BaseException:
            self.stop()
            raise
        return self

    def revive(self, timeout: float = 180.0) -> None:
        """Restart (on the same port) whichever side is not running."""
        for server in self.servers:
            server.revive(timeout)

    def stop(self) -> None:
        for server in self.servers:
            with contextlib.suppress(Exception):
                server.stop()

    def __enter__(self) -> ServerPair:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
