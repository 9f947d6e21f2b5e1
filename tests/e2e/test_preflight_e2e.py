"""``preflight`` on real llama.cpp servers (xllamacpp, the demo GGUF).

Three servers on the same file: ``base`` and ``twin`` identical (an identical pair must
pass, exit 0), ``penalised`` with ``repeat_penalty`` 1.1 as its default and a context too
small for the run's replies (preflight must name both settings and exit 1).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
from click.testing import CliRunner

from shadow_burnin.cli import cli
from shadow_burnin.io.servers.llama_build import ensure_model
from shadow_burnin.io.servers.local import LocalServer
from shadow_burnin.io.servers.xllama import XllamaSettings, xllama_server
from tests.e2e.conftest import require_demo_extra, running

pytestmark = pytest.mark.e2e

SMALL_CTX = 256  # llama.cpp's smallest context; the built-in corpus has a ~2400-token prompt


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, LocalServer]]:
    require_demo_extra()
    model = ensure_model()
    logs = tmp_path_factory.mktemp("preflight-logs")
    variants = {"base": XllamaSettings(), "twin": XllamaSettings(),
                "penalised": XllamaSettings(repeat_penalty=1.1, n_ctx=SMALL_CTX)}
    with ExitStack() as stack:
        yield {name: stack.enter_context(running(
                   xllama_server(model, settings, name=f"pf-{name}",
                                 log_path=logs / f"{name}.log"), f"xllamacpp {name}"))
               for name, settings in variants.items()}


def preflight(v1: LocalServer, v2: LocalServer) -> tuple[int, dict[str, dict[str, object]], int]:
    result = CliRunner().invoke(cli, ["preflight", "--v1", v1.url, "--v2", v2.url, "--api",
                                      "completions", "--max-tokens", "48", "--aa-tokens", "8",
                                      "--sample", "8", "--json"])
    data = json.loads(result.output)
    return (result.exit_code, {f["check"]: f for f in data["findings"]},
            data["longest_prompt_tokens"])


def test_identical_pair_passes(servers: dict[str, LocalServer]) -> None:
    code, found, _ = preflight(servers["base"], servers["twin"])
    assert code == 0, found
    for check in ("model", "tokenisation", "sampler", "determinism.v1", "determinism.v2",
                  "context.v1", "context.v2"):
        assert found[check]["status"] == "ok", (check, found[check])


def test_repeat_penalty_and_small_context_fail(servers: dict[str, LocalServer]) -> None:
    code, found, longest = preflight(servers["base"], servers["penalised"])
    assert code == 1
    rp = found["sampler.repeat_penalty"]
    assert rp["fatal"] and "1.1 on v2" in str(rp["detail"]) and "--repeat-penalty" in \
        str(rp["fix"])
    assert found["context.v1"]["status"] == "ok"
    ctx = found["context.v2"]
    assert ctx["fatal"] and f"n_ctx {SMALL_CTX} < longest prompt {longest}" in str(ctx["detail"])
    assert f"at least {longest + 48} tokens" in str(ctx["fix"])
    # same file and tokenizer: those checks still pass
    assert found["model"]["status"] == "ok" and found["tokenisation"]["status"] == "ok"
