"""``preflight`` against small dedicated llama.cpp-like servers (exact expectations).

Each fake server answers ``/v1/models``, ``/props``, ``/tokenize`` and ``/v1/completions``
from plain attributes, in a thread with its own event loop, so the command under test
runs exactly as from a shell (``CliRunner`` → ``asyncio.run``).
"""

from __future__ import annotations

import asyncio
import copy
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from click.testing import CliRunner

from shadow_burnin.app.preflight import SideFacts, judge, sample_prompts
from shadow_burnin.cli import cli
from shadow_burnin.core.prompt import Prompt
from shadow_burnin.core.records import SideReply

PROPS: dict[str, Any] = {
    "default_generation_settings": {
        "params": {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "repeat_penalty": 1.0,
                   "repeat_last_n": 64, "presence_penalty": 0.0, "frequency_penalty": 0.0,
                   "dry_multiplier": 0.0, "ignore_eos": False},
        "n_ctx": 4096},
    "model_path": "/models/gemma.gguf",
}
META = {"n_vocab": 262144, "n_params": 268098176, "size": 246587904, "ftype": "Q4_K - Medium"}


class FakeLlama:
    """A llama.cpp-like server whose answers are its attributes."""

    def __init__(self) -> None:
        self.props: dict[str, Any] | None = copy.deepcopy(PROPS)
        self.meta: dict[str, Any] | None = dict(META)
        self.model_id = "gemma"
        self.tokenize = True
        self.drop_bos = False
        self.nondeterministic = False
        self.calls = 0
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    async def _models(self, request: web.Request) -> web.Response:
        entry: dict[str, Any] = {"id": self.model_id, "object": "model"}
        if self.meta is not None:
            entry["meta"] = self.meta
        return web.json_response({"object": "list", "data": [entry]})

    async def _props(self, request: web.Request) -> web.Response:
        if self.props is None:
            return web.json_response({"error": "not found"}, status=404)
        return web.json_response(self.props)

    async def _tokenize(self, request: web.Request) -> web.Response:
        if not self.tokenize:
            return web.Response(status=404)
        body = await request.json()
        ids = [2] if not self.drop_bos else []
        ids += [ord(c) for c in body["content"]]
        return web.json_response({"tokens": ids})

    async def _complete(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.calls += 1
        text = f" reply to {body['prompt'][:20]}"
        if self.nondeterministic:
            text += f" #{self.calls}"
        return web.json_response({
            "id": "x", "object": "text_completion", "model": self.model_id,
            "choices": [{"index": 0, "text": text, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}})

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/props", self._props)
        app.router.add_post("/tokenize", self._tokenize)
        app.router.add_post("/v1/completions", self._complete)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        self._ready.set()
        self._loop.run_forever()

    def start(self) -> FakeLlama:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture
def pair() -> Iterator[tuple[FakeLlama, FakeLlama]]:
    v1, v2 = FakeLlama().start(), FakeLlama().start()
    try:
        yield v1, v2
    finally:
        v1.stop()
        v2.stop()


@pytest.fixture
def prompts_file(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.jsonl"
    lines = [{"id": f"p{i}", "category": "c", "prompt": f"question number {i} " + "x" * i}
             for i in range(30)]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def run(pair: tuple[FakeLlama, FakeLlama], prompts: Path, *extra: str) -> Any:
    v1, v2 = pair
    return CliRunner().invoke(cli, ["preflight", "--v1", v1.url, "--v2", v2.url, "--api",
                                    "completions", "--prompts", str(prompts), "--json",
                                    "--max-tokens", "64", *extra])


def findings(result: Any) -> dict[str, dict[str, Any]]:
    data = json.loads(result.output)
    return {f["check"]: f for f in data["findings"]}


def test_identical_pair_passes(pair: tuple[FakeLlama, FakeLlama], prompts_file: Path) -> None:
    result = run(pair, prompts_file)
    assert result.exit_code == 0, result.output
    got = findings(result)
    assert {k: v["status"] for k, v in got.items()} == {
        "model": "ok", "tokenisation": "ok", "sampler": "ok", "determinism.v1": "ok",
        "determinism.v2": "ok", "context.v1": "ok", "context.v2": "ok"}
    data = json.loads(result.output)
    assert data["longest_prompt_tokens"] == len("question number 29 " + "x" * 29) + 1
    assert data["prompts_tokenised"] == 16 + 3  # p0..p15 spread, plus the 3 longest (p27..p29)
    assert pair[0].calls == 2 and pair[1].calls == 2  # one A/A per side


def test_repeat_penalty_default_differs(pair: tuple[FakeLlama, FakeLlama],
                                        prompts_file: Path) -> None:
    pair[1].props["default_generation_settings"]["params"]["repeat_penalty"] = 1.1  # type: ignore[index]
    result = run(pair, prompts_file)
    assert result.exit_code == 1
    f = findings(result)["sampler.repeat_penalty"]
    assert f["fatal"] and "1 on v1 vs 1.1 on v2" in f["detail"]
    assert "--repeat-penalty" in f["fix"]


def test_repeat_window_irrelevant_without_penalty(pair: tuple[FakeLlama, FakeLlama],
                                                  prompts_file: Path) -> None:
    pair[1].props["default_generation_settings"]["params"]["repeat_last_n"] = 128  # type: ignore[index]
    pair[1].props["default_generation_settings"]["params"]["top_k"] = 20  # type: ignore[index]
    result = run(pair, prompts_file)
    assert result.exit_code == 0, result.output
    got = findings(result)
    assert got["sampler.other"]["status"] == "warn" and "top_k 40 vs 20" in \
        got["sampler.other"]["detail"]


def test_small_context(pair: tuple[FakeLlama, FakeLlama], prompts_file: Path) -> None:
    pair[1].props["default_generation_settings"]["n_ctx"] = 64  # type: ignore[index]
    result = run(pair, prompts_file)
    assert result.exit_code == 1
    got = findings(result)
    assert got["context.v1"]["status"] == "ok"
    f = got["context.v2"]
    longest = len("question number 29 " + "x" * 29) + 1
    assert f["fatal"] and f"at least {longest + 64} tokens" in f["fix"]


def test_dropped_bos(pair: tuple[FakeLlama, FakeLlama], prompts_file: Path) -> None:
    pair[1].drop_bos = True
    result = run(pair, prompts_file)
    assert result.exit_code == 1
    f = findings(result)["tokenisation"]
    assert f["fatal"] and "BOS" in f["fix"]
    assert f["detail"].startswith("19 of 19 prompts tokenised differently")


def test_nondeterministic_side(pair: tuple[FakeLlama, FakeLlama], prompts_file: Path) -> None:
    pair[0].nondeterministic = True
    result = run(pair, prompts_file)
    assert result.exit_code == 1
    got = findings(result)
    assert got["determinism.v1"]["fatal"] and got["determinism.v2"]["status"] == "ok"
    assert "cache_prompt" in got["determinism.v1"]["fix"]


def test_different_model(pair: tuple[FakeLlama, FakeLlama], prompts_file: Path) -> None:
    pair[1].meta = {**META, "n_params": 999, "ftype": "Q8_0"}
    result = run(pair, prompts_file)
    assert result.exit_code == 1
    f = findings(result)["model"]
    assert f["fatal"] and "n_params 268098176 vs 999" in f["detail"]


def test_plain_openai_servers_skip_what_they_do_not_expose(
        pair: tuple[FakeLlama, FakeLlama], prompts_file: Path) -> None:
    for side in pair:
        side.props, side.tokenize, side.meta = None, False, None
    pair[1].model_id = "other-name"
    result = run(pair, prompts_file)
    assert result.exit_code == 0, result.output
    got = findings(result)
    assert got["tokenisation"]["status"] == "skipped"
    assert got["sampler"]["status"] == "skipped"
    assert got["context.v2"]["status"] == "skipped"
    assert got["model"]["status"] == "warn"


def test_unreachable_side_fails(pair: tuple[FakeLlama, FakeLlama], prompts_file: Path) -> None:
    v1, _ = pair
    result = CliRunner().invoke(cli, ["preflight", "--v1", v1.url, "--v2",
                                      "http://127.0.0.1:9", "--api", "completions",
                                      "--prompts", str(prompts_file), "--json"])
    assert result.exit_code == 1
    assert "connection-refused" in findings(result)["determinism.v2"]["detail"]


def test_bad_prompts_file_exit_2(pair: tuple[FakeLlama, FakeLlama], tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "category": "c"}\n')
    result = run(pair, bad)
    assert result.exit_code == 2
    assert "bad.jsonl:1" in result.output and len(result.output.strip().splitlines()) == 1


def test_hostile_model_name_escaped_on_terminal(pair: tuple[FakeLlama, FakeLlama],
                                                prompts_file: Path) -> None:
    for side in pair:
        side.meta = None
    pair[1].model_id = "evil\x1b[2Jname"
    v1, v2 = pair
    result = CliRunner().invoke(cli, ["preflight", "--v1", v1.url, "--v2", v2.url, "--api",
                                      "completions", "--prompts", str(prompts_file)])
    assert result.exit_code == 0, result.output
    assert "\x1b[2J" not in result.output and "evil" in result.output


def test_judge_is_pure_and_sample_includes_longest() -> None:
    prompts = [Prompt(id=f"p{i}", category="c", prompt="x" * i) for i in range(1, 11)]
    picked = sample_prompts(prompts, 2)
    assert [p.id for p in picked][:2] == ["p1", "p6"]
    assert {"p10", "p9", "p8"} <= {p.id for p in picked}
    same = SideReply(text="a")
    f1 = SideFacts("u1", aa=(same, same), tokens={p.id: [1] * 5 for p in picked},
                   props={"n_ctx": 10})
    f2 = SideFacts("u2", aa=(same, SideReply(text="b")), tokens={p.id: [1] * 5 for p in picked},
                   props={"n_ctx": 100})
    result = judge(f1, f2, picked, run_max_tokens=8)
    by = {f.check: f for f in result.findings}
    assert by["context.v1"].fatal and not by["context.v2"].fatal
    assert by["determinism.v2"].fatal and not result.ok


def test_repeat_penalty_sent_by_the_run_is_only_noted(pair: tuple[FakeLlama, FakeLlama],
                                                      prompts_file: Path,
                                                      tmp_path: Path) -> None:
    pair[1].props["default_generation_settings"]["params"]["repeat_penalty"] = 1.1  # type: ignore[index]
    config = tmp_path / "burnin.toml"
    config.write_text('[request]\nextra = { repeat_penalty = 1.0, cache_prompt = false }\n')
    result = run(pair, prompts_file, "--config", str(config))
    assert result.exit_code == 0, result.output
    f = findings(result)["sampler.repeat_penalty"]
    assert f["status"] == "warn" and "every request sends repeat_penalty = 1" in f["detail"]
