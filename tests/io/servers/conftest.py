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
