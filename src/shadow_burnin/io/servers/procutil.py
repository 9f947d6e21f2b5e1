"""Helpers for the server entry points (``serve_xllama``, ``serve_mistral``).

- :func:`die_with_parent`: the kernel sends SIGTERM to this process when its parent dies
  (Linux ``PR_SET_PDEATHSIG``), so a server never outlives the run that started it, even
  one that was SIGKILLed;
- :func:`die_on_stop_signals` while the engine loads (a stop signal ends the process at
  once), then :func:`wait_stop` once it serves (a handler notes the signal, the entry
  point logs it and exits).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
import threading

from shadow_burnin.io.servers.local import DETACHED_ENV

STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


def die_with_parent() -> None:
    """Ask for SIGTERM when the parent dies, unless started detached (``--keep-servers``)."""
    if not sys.platform.startswith("linux") or os.environ.get(DETACHED_ENV) == "1":
        return
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent or parent == 1:  # the parent died before prctl
        os._exit(0)


def die_on_stop_signals() -> None:
    """While the engine loads, SIGTERM/SIGINT/SIGHUP end the process at once (default
    action): a server stopped, or orphaned, during its load never lingers until it is done."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_DFL)


def wait_stop() -> int:
    """After the load (main thread): wait for SIGTERM, SIGINT or SIGHUP; its number."""
    got: list[int] = []
    stop = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        got.append(signum)
        stop.set()

    for sig in STOP_SIGNALS:
        signal.signal(sig, handler)
    while not stop.wait(0.5):  # Python runs signal handlers in the main thread between waits
        pass
    return got[0]
