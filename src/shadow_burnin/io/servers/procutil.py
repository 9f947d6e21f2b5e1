"""Helpers for the server entry points (``serve_xllama``, ``serve_mistral``).

- :func:`die_with_parent`: the kernel sends SIGTERM to this process when its parent dies
  (Linux ``PR_SET_PDEATHSIG``), so a server never outlives the run that started it, even
  one that was SIGKILLed;
- :func:`block_stop_signals` then :func:`wait_stop`: SIGTERM/SIGINT are blocked *before*
  the engine starts its threads (they inherit the mask, so no engine thread takes the
  signal) and the main thread then sleeps in ``sigwait`` until one arrives.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

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


def block_stop_signals() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)


def wait_stop() -> int:
    """Block until SIGTERM, SIGINT or SIGHUP; the signal number."""
    return int(signal.sigwait(STOP_SIGNALS))
