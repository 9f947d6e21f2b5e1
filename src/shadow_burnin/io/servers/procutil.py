"""Helpers for the server entry points (``serve_xllama``, ``serve_mistral``).

- :func:`die_with_parent`: the kernel sends SIGTERM to this process when its parent dies
  (Linux ``PR_SET_PDEATHSIG``), so a server never outlives the run that started it, even
  one that was SIGKILLed;
- :func:`die_on_stop_signals` while the engine loads (a stop signal ends the process at
  once), then :func:`wait_stop` once it serves (a handler notes the signal, the entry
  point logs it and exits);
- :func:`entry_preamble`: what every entry point does first (the two above, its one JSON
  argument, the model file, the engine's import), with the exit codes they share.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib
import json
import os
import signal
import sys
import threading
from types import ModuleType
from typing import Any

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


# exit codes of the entry points before the engine starts (the runner's log names them)
EXIT_USAGE, EXIT_NO_MODEL, EXIT_NO_ENGINE = 2, 3, 4


def entry_preamble(argv: list[str], entry: str, engine: str
                   ) -> tuple[dict[str, Any], ModuleType] | int:
    """The start of a server entry point ``python -m ENTRY '<json>'``: die with the parent
    and on stop signals while loading; exactly one argument, a JSON object (else exit 2);
    its ``model`` an existing file (else 3); the ``engine`` module importable (else 4,
    naming the demo extra). Returns (the settings, the engine module) or the exit code,
    each failure explained in one line on stderr."""
    die_with_parent()
    die_on_stop_signals()
    config: Any = None
    if len(argv) == 1:
        try:
            config = json.loads(argv[0])
        except ValueError:
            config = None
    if not isinstance(config, dict) or not isinstance(config.get("model"), str):
        print(f"usage: python -m {entry} '<settings json with \"model\">'", file=sys.stderr)
        return EXIT_USAGE
    if not os.path.isfile(config["model"]):
        print(f"model file not found: {config['model']}", file=sys.stderr, flush=True)
        return EXIT_NO_MODEL
    try:
        module = importlib.import_module(engine)
    except ImportError as exc:
        print(f"cannot import {engine} ({exc}); install the demo extra", file=sys.stderr)
        return EXIT_NO_ENGINE
    return config, module
