"""``ppl`` against fake servers with a known answer (tests/servers/fakelm.py)."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import orjson
import pytest

from shadow_burnin.app.ppl import append_run, latest_run, load_text, measure
from shadow_burnin.errors import ConfigError, LogError
from shadow_burnin.io.ppl.scoring import PplError, PplSide, ScoringClient
from tests.servers.fakelm import FakeLM, start, token_id

TEXT = " ".join(f"word{i % 37}" for i in range(100))  # 100 tokens
TS = "2026-11-27T23:00:00.000Z"
Start = Callable[..., Awaitable[str]]


@pytest.fixture
async def fake() -> AsyncIterator[Start]:
    runners = []

    async def go(dialect: str, p: float = 0.6) -> str:
        runner, url = await start(FakeLM(dialect, p))
        runners.append(runner)
        return url

    yield go
    for runner in runners:
        await runner.cleanup()


async def run(v1: str, v2: str, window: int = 32, **kw) -> dict:
    sides = [PplSide("v1", v1, kw.pop("m1", "auto")), PplSide("v2", v2, kw.pop("m2", "auto"))]
    said: list[str] = []
    got = await measure(sides, TEXT, {"name": "t"}, window=window, top_k=5,
                        max_windows=kw.pop("max_windows", None), timeout_s=10, ts=TS,
                        say=said.append)
    got.record["said"] = said
    return got.record


async def test_known_answer_echo_vs_echo(fake: Start) -> None:
    rec = await run(await fake("echo", 0.6), await fake("echo-bos", 0.3))
    assert (rec["v1"]["method"], rec["v2"]["method"]) == ("echo", "echo")
    assert rec["windows"] == 3 and rec["text"]["tokens"] == 100  # 3 full windows of 32
    for side, p in (("v1", 0.6), ("v2", 0.3)):
        assert rec[side]["tokens"] == 3 * 31  # first token of each window not scored
        assert rec[side]["ppl"] == pytest.approx(1 / p, rel=1e-6)
        assert rec[side]["requests"] == 3
    pair = rec["paired"]
    assert pair["positions"] == 93 and pair["mismatched"] == 0
    assert pair["nll_diff_mean"] == pytest.approx(math.log(0.6 / 0.3), abs=1e-6)
    assert pair["nll_diff_se"] == pytest.approx(0, abs=1e-9)
    kl = 0.6 * math.log(0.6 / 0.3) + 0.4 * math.log(0.4 / 0.7)
    assert pair["kld_mean"] == pytest.approx(kl, abs=1e-6)
    assert pair["same_top1_rate"] == 0.0  # v1's top token is the actual one, v2's " zzz"
    assert pair["rms_dp"] == pytest.approx(0.3, abs=1e-6)
    assert rec["ppl_delta"] == pytest.approx(1 / 0.3 - 1 / 0.6, abs=1e-5)


async def test_llama_method_scores_the_same_positions_as_echo(fake: Start) -> None:
    rec = await run(await fake("llama", 0.5), await fake("echo-bos", 0.5), window=16,
                    max_windows=2)
    assert (rec["v1"]["method"], rec["v2"]["method"]) == ("llama", "echo")
    assert rec["windows"] == 2 and rec["v1"]["tokens"] == rec["v2"]["tokens"] == 30
    assert rec["v1"]["ppl"] == pytest.approx(2.0) and rec["ppl_delta"] == pytest.approx(0)
    pair = rec["paired"]
    assert pair["kld_mean"] == pytest.approx(0, abs=1e-12) and pair["same_top1_rate"] == 1.0
    assert pair["positions"] == 30 and pair["mismatched"] == 0
    # per window: 2 tokenize calls + one /completion per scored position
    assert rec["v1"]["requests"] == 2 * (2 + 15)
    assert any("llama" in s for s in rec["said"])


async def test_llama_requests_force_the_actual_token() -> None:
    lm = FakeLM("llama", 0.5)
    runner, url = await start(lm)
    try:
        async with ScoringClient(PplSide("v1", url, "llama"), 3, 10) as client:
            scores = await client.score("alpha beta gamma")
    finally:
        await runner.cleanup()
    # <bos> alpha beta gamma: alpha (the window's first token) is not scored
    assert [s.token for s in scores] == [" beta", " gamma"]
    assert scores[0].logprob == pytest.approx(math.log(0.5))
    completions = [b for p, b in lm.calls if p == "/completion"]
    assert [c["prompt"] for c in completions] == [
        [1, token_id("alpha")], [1, token_id("alpha"), token_id(" beta")]]
    assert [c["logit_bias"] for c in completions] == [
        [[token_id(" beta"), 100.0]], [[token_id(" gamma"), 100.0]]]
    first = completions[0]
    assert first["n_predict"] == 1 and first["n_probs"] == 3 and first["cache_prompt"]
    assert first["post_sampling_probs"] is False and first["temperature"] == 0


async def test_custom_endpoint_gives_ppl_only(fake: Start) -> None:
    rec = await run(await fake("echo", 0.5), await fake("endpoint", 0.25))
    assert rec["v2"]["method"] == "endpoint" and rec["v2"]["ppl"] == pytest.approx(4.0)
    assert rec["v2"]["tokens"] == 100 and rec["paired"] is None
    assert any("custom endpoint" in n for n in rec["notes"])


async def test_auto_detection_fails_clearly(fake: Start) -> None:
    with pytest.raises(PplError, match="v2: no way to score text"):
        await run(await fake("echo"), await fake("nothing"))
    with pytest.raises(PplError, match="v1: /props: ClientConnectorError"):
        await run("http://127.0.0.1:9", await fake("echo"))


async def test_forced_echo_on_llama_server_is_refused(fake: Start) -> None:
    # llama.cpp's /v1/completions ignores echo: never mistaken for scores
    with pytest.raises(PplError, match="did not echo"):
        await run(await fake("llama"), await fake("echo"), m1="echo")


async def test_only_endpoints_need_no_tokenizer(fake: Start) -> None:
    rec = await run(await fake("endpoint", 0.5), await fake("endpoint", 0.5))
    assert rec["windows"] == 0 and rec["v1"]["ppl"] == rec["v2"]["ppl"] == 2.0


def test_text_and_log(tmp_path: Path) -> None:
    text, info = load_text(None)
    assert len(text.split()) > 900 and info["name"] == "builtin:ppl-essay.txt"
    with pytest.raises(ConfigError, match="no such text file"):
        load_text(str(tmp_path / "missing.txt"))
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(ConfigError, match="empty"):
        load_text(str(tmp_path / "empty.txt"))
    log = tmp_path / "x.ppl.jsonl"
    assert latest_run(log) is None
    append_run(log, {"kind": "ppl", "ts": TS, "n": 1})
    append_run(log, {"kind": "ppl", "ts": TS, "n": 2})
    assert latest_run(log)["n"] == 2
    with open(log, "ab") as fh:
        fh.write(orjson.dumps({"kind": "round"}) + b"\n")
    with pytest.raises(LogError, match=r"x\.ppl\.jsonl:3: not a shadow-burnin ppl record"):
        latest_run(log)
