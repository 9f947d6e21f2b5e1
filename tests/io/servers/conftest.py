"""The demo model for real-server tests (fails, never skips, without the [demo] extra)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shadow_burnin.errors import ServerStartError
from shadow_burnin.io.servers.llama_build import ensure_model


@pytest.fixture(scope="session")
def demo_model() -> Path:
    try:
        return ensure_model()
    except ServerStartError as exc:
        pytest.fail(f"{exc} (or run scripts/setup-demo)", pytrace=False)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The compiled pair's tests (``llama_cpp`` marker) run only when ``-m`` names them.

    ``addopts`` deselects them by default, but any ``-m`` on the command line (``-m e2e``)
    replaces that expression; this keeps a plain ``-m e2e`` from compiling llama.cpp.
    """
    if "llama_cpp" in (config.option.markexpr or ""):
        return
    keep = [item for item in items if item.get_closest_marker("llama_cpp") is None]
    if len(keep) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i not in keep])
        items[:] = keep
