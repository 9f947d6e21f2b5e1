"""The mirror session: requests through the proxy become rounds in the log."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import openai
import orjson
import pytest

from shadow_burnin.app.mirror import MirrorOptions, MirrorSession
from shadow_burnin.core.stats import summarise
from shadow_burnin.errors import ConfigError
from shadow_burnin.io.http.client import Endpoint
from shadow_burnin.io.log.events import read_events
from shadow_burnin.io.log.logread import scan
from shadow_burnin.io.log.store import Store
from shadow_burnin.prompts import load_file
from tests.servers.scripted import ScriptedServer

Start = Callable[..., Awaitable[ScriptedServer]]


@contextlib.asynccontextmanager
async def session(tmp_path: Path, v1: str, v2: str, v2_key: str | None = None,
                  **options: Any) -> AsyncIterator[tuple[str, MirrorSession]]:
    log = tmp_path / "m.jsonl"
    store = Store(log, tmp_path / "m.state")
    store.open()
    try:
        s = MirrorSession(MirrorOptions(v1=Endpoint(v1), v2=Endpoint(v2, api_key=v2_key),
                                        port=0, **options),
                          store)
        await s.start()
        try:
            yield f"http://127.0.0.1:{s.proxy.port}", s
        finally:
            await s.close()
    finally:
        store.close()


def rounds(tmp_path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in (tmp_path / "m.jsonl").read_bytes().splitlines()]


async def post(url: str, path: str, body: dict[str, Any], **headers: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as http, \
            http.post(url + path, json=body, headers=headers) as resp:
        return resp.status, await resp.read()


async def wait_rounds(s: MirrorSession, n: int) -> None:
    for _ in range(2000):  # bounded: the committer writes them in the background
        if s.stats.rounds >= n:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"{s.stats.rounds} rounds, expected {n}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_buckets_privacy_and_the_log_shape(tmp_path: Path, scripted_server: Start
                                                 ) -> None:
    def v1_reply(body: dict[str, Any]) -> str:
        return {"same": "identical answer", "differ": "The cat sat on the mat today",
                "prefix": "short"}.get(str(body.get("prompt")), "x")

    def v2_reply(body: dict[str, Any]) -> str:
        return {"same": "identical answer", "differ": "The cat sat on the hat today",
                "prefix": "short and longer"}.get(str(body.get("prompt")), "x")

    v1 = await scripted_server(reply=v1_reply)
    v2 = await scripted_server(reply=v2_reply)
    async with session(tmp_path, v1.url, v2.url) as (url, s):
        for prompt in ("same", "differ", "prefix"):
            await post(url, "/v1/completions", {"prompt": prompt, "temperature": 0})
        await post(url, "/v1/completions", {"prompt": "same", "temperature": 0.8})
        await post(url, "/v1/completions", {"prompt": "same"})  # default temperature
        await wait_rounds(s, 5)
    log = rounds(tmp_path)
    assert [r["round"] for r in log] == [1, 2, 3, 4, 5]
    by_prompt = {(r["prompt_chars"], r["bucket"]) for r in log}
    assert {b for _, b in by_prompt} == {"exact", "no-match", "prefix-only", "not-comparable"}
    assert [r["bucket"] for r in log] == ["exact", "no-match", "prefix-only",
                                          "not-comparable", "not-comparable"]
    assert log[3]["mirror"]["reason"] == log[4]["mirror"]["reason"] == "temperature>0"
    for r in log:
        assert r["source"] == "mirror" and r["category"] == "mirror-completions"
        assert r["v1"]["text"] is None and r["v2"]["text"] is None  # private by default
        assert len(r["prompt_sha256"]) == 64 and "request" not in r
    differ = log[1]
    assert differ["divergence_byte"] == 19 and differ["prefix_match_chars"] == 19
    assert differ["v1"]["text_chars"] == len("The cat sat on the mat today")
    assert differ["context"] == {"at": 0, "v1": "The cat sat on the mat today",
                                 "v2": "The cat sat on the hat today"}
    assert "context" not in log[0] and "context" not in log[3]
    # bench reads the rounds as usual: the new buckets are not parity rounds
    summary = summarise(scan(tmp_path / "m.jsonl").columns)
    assert summary.rounds == 5 and summary.parity_rounds == 3
    assert summary.counts["not-comparable"] == 2
    assert summary.exact_match_rate == pytest.approx(1 / 3)


async def test_keep_text_keeps_replies_and_the_request(tmp_path: Path,
                                                       scripted_server: Start) -> None:
    v1 = await scripted_server(reply="alpha")
    v2 = await scripted_server(reply="alpha")
    body = {"messages": [{"role": "user", "content": "hi"}], "temperature": 0,
            "stop": ["\n"], "max_tokens": 5}
    async with session(tmp_path, v1.url, v2.url, keep_text=True) as (url, s):
        await post(url, "/v1/chat/completions", body)
        await wait_rounds(s, 1)
    [r] = rounds(tmp_path)
    assert r["bucket"] == "exact" and r["category"] == "mirror-chat"
    assert r["v1"]["text"] == r["v2"]["text"] == "alpha"
    assert r["request"] == body


async def test_unreachable_sides_and_a_cancelled_client(tmp_path: Path,
                                                        scripted_server: Start) -> None:
    v1 = await scripted_server(reply="w " * 300, per_chunk_ms=200, chunk_chars=2)
    v2 = await scripted_server(reply="w " * 300)
    dead = f"http://127.0.0.1:{_free_port()}"
    async with session(tmp_path, v1.url, v2.url) as (url, s):
        async with aiohttp.ClientSession() as http:
            resp = await http.post(url + "/v1/completions", json={
                "prompt": "p", "temperature": 0, "stream": True})
            await resp.content.readany()
            resp.close()
        await wait_rounds(s, 1)
        await v2.set_fault("http-503")
        v1.per_chunk_ms = 0
        await post(url, "/v1/completions", {"prompt": "p", "temperature": 0})
        await wait_rounds(s, 2)
    async with session(tmp_path, dead, v2.url) as (url, s):
        await v2.set_fault(None)
        status, _ = await post(url, "/v1/completions", {"prompt": "p", "temperature": 0})
        assert status == 502
        await wait_rounds(s, 1)
    log = rounds(tmp_path)
    assert [r["bucket"] for r in log] == ["client-cancelled", "v2-unreachable",
                                          "v1-unreachable"]
    assert [r["round"] for r in log] == [1, 2, 3]  # a second session continues the log
    assert log[0]["v1"]["error"] == "client-cancelled"
    assert log[0]["v2"]["error"] is None and log[0]["v2"]["text_chars"] == 600
    assert log[1]["v2"]["error"].startswith("http-503")
    assert log[2]["v1"]["error"].startswith("connection-refused")
    assert log[2]["v2"]["error"] is None
    summary = summarise(scan(tmp_path / "m.jsonl").columns)
    assert summary.parity_rounds == 0
    # a side's latency counts only where it replied: the cancelled round gives none
    assert summary.latency_ms["v1"] == {q: log[1]["v1"]["latency_ms"]
                                        for q in ("p50", "p95", "p99")}
    assert summary.latency_ms["v2"] == {q: log[2]["v2"]["latency_ms"]
                                        for q in ("p50", "p95", "p99")}
    stats = [e for e in read_events(tmp_path / "m.jsonl") if e.get("event") == "mirror-stats"]
    assert len(stats) == 2 and stats[0]["proxy"]["client_cancelled"] == 1


async def test_force_greedy_shadow_compares_two_greedy_copies(tmp_path: Path,
                                                              scripted_server: Start
                                                              ) -> None:
    v1 = await scripted_server(reply="same")
    v2 = await scripted_server(reply="same")
    body = {"prompt": "p", "temperature": 0.9, "n": 2, "max_tokens": 4}
    async with session(tmp_path, v1.url, v2.url, force_greedy=True) as (url, s):
        status, _ = await post(url, "/v1/completions", body)
        assert status == 200
        await post(url, "/v1/completions", {"prompt": "p", "tools": [{"type": "function"}],
                                            "temperature": 0})
        await wait_rounds(s, 2)
    r, tools = rounds(tmp_path)
    client = [q for q in v1.requests if q.body.get("temperature") == 0.9]
    greedy = [q for q in v1.requests if q.body.get("temperature") == 0 and "tools" not in q.body]
    assert len(client) == 1 and client[0].body == body  # the client's request untouched
    assert len(greedy) == 1 and "n" not in greedy[0].body
    assert v2.requests[0].body == greedy[0].body
    assert r["bucket"] == "exact" and r["mirror"]["forced_greedy"] is True
    assert r["mirror"]["client"]["status"] == 200
    assert tools["bucket"] == "not-comparable" and tools["mirror"]["reason"] == "tools"


async def test_secrets_never_reach_the_log_or_the_capture(tmp_path: Path,
                                                          scripted_server: Start) -> None:
    v1 = await scripted_server()
    v2 = await scripted_server()
    capture = tmp_path / "cap.jsonl"
    async with session(tmp_path, v1.url, v2.url, capture=capture, keep_text=True,
                       v2_key="sk-shadow-secret") as (url, s):
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="sk-client-secret",
                                    max_retries=0)
        await client.completions.create(model="m", prompt="hello", temperature=0,
                                        max_tokens=3)
        await wait_rounds(s, 1)
    assert v1.requests[0].headers["Authorization"] == "Bearer sk-client-secret"
    assert v2.requests[0].headers["Authorization"] == "Bearer sk-shadow-secret"
    assert capture.exists() and len(list(tmp_path.iterdir())) >= 4
    for path in tmp_path.iterdir():
        if path.is_file():
            assert b"secret" not in path.read_bytes(), path


async def test_capture_is_private_and_a_prompts_file(tmp_path: Path,
                                                     scripted_server: Start) -> None:
    v1 = await scripted_server()
    v2 = await scripted_server()
    capture = tmp_path / "traffic.jsonl"
    chat = {"model": "m", "messages": [{"role": "system", "content": "be brief"},
                                       {"role": "user", "content": "hi ü"}],
            "temperature": 0.7, "max_tokens": 9, "stop": ["\n\n"], "top_p": 0.9,
            "stream": True}
    completion = {"prompt": "Once upon", "n_predict": 5, "temperature": 0, "seed": 3}
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}],
             "temperature": 0}
    async with session(tmp_path, v1.url, v2.url, capture=capture, sample=0.0) as (url, s):
        await post(url, "/v1/chat/completions", chat, Authorization="Bearer sk-x")
        await post(url, "/completion", completion)
        await post(url, "/v1/chat/completions", parts)  # content parts: not a prompt line
        assert s.stats.captured == 2 and s.stats.capture_skipped == 1
    assert stat.S_IMODE(os.stat(capture).st_mode) == 0o600
    assert rounds(tmp_path) == []  # sample 0: captured, never shadowed
    prompts = load_file(capture)
    assert [p.category for p in prompts] == ["mirror-chat", "mirror-native"]
    first, second = prompts
    assert first.messages is not None and first.messages[1].content == "hi ü"
    assert first.max_tokens == 9
    assert first.params == {"temperature": 0.7, "stop": ["\n\n"], "top_p": 0.9}
    assert second.prompt == "Once upon" and second.max_tokens == 5
    assert second.params == {"temperature": 0, "seed": 3}
    assert first.at is not None and second.at is not None and first.at <= second.at
    assert b"sk-x" not in capture.read_bytes()
    # an existing capture that others can read is refused; so is the log itself
    loose = tmp_path / "loose.jsonl"
    loose.write_bytes(b"")
    loose.chmod(0o644)
    for target in (loose, tmp_path / "m.jsonl"):
        with pytest.raises(ConfigError):
            async with session(tmp_path, v1.url, v2.url, capture=target):
                pass


async def test_sampling_and_trusted_seeds(tmp_path: Path, scripted_server: Start) -> None:
    v1 = await scripted_server(reply="r")
    v2 = await scripted_server(reply="r")
    async with session(tmp_path, v1.url, v2.url, sample=0.5, seed=1,
                       trust_seed=True) as (url, s):
        for _ in range(40):
            await post(url, "/v1/completions", {"prompt": "p", "temperature": 0.5,
                                                "seed": 42})
        stats = s.proxy.stats
        await wait_rounds(s, stats.mirrored)
        assert 0 < stats.mirrored < 40 and stats.skipped == 40 - stats.mirrored
    log = rounds(tmp_path)
    assert len(log) == stats.mirrored
    assert {r["bucket"] for r in log} == {"exact"}  # a trusted seed is comparable


async def test_a_halt_that_stops_ends_the_shadow_never_the_clients(tmp_path: Path,
                                                                   scripted_server: Start
                                                                   ) -> None:
    class StopAtOnce:
        def __init__(self) -> None:
            self.seen: list[int] = []

        def committed(self, records: list[dict[str, Any]], state: Any,
                      stop: Callable[[str], None]) -> None:
            self.seen.extend(r["round"] for r in records)
            stop("no-match halt")

    v1 = await scripted_server(reply="a")
    v2 = await scripted_server(reply="b")
    observer = StopAtOnce()
    store = Store(tmp_path / "m.jsonl", tmp_path / "m.state")
    store.open()
    s = MirrorSession(MirrorOptions(v1=Endpoint(v1.url), v2=Endpoint(v2.url), port=0),
                      store, observers=[observer])
    await s.start()
    try:
        url = f"http://127.0.0.1:{s.proxy.port}"
        await post(url, "/v1/completions", {"prompt": "p", "temperature": 0})
        await wait_rounds(s, 1)
        for _ in range(3):
            status, body = await post(url, "/v1/completions", {"prompt": "p",
                                                               "temperature": 0})
            assert status == 200 and orjson.loads(body)["choices"][0]["text"] == "a"
    finally:
        await s.close()
        store.close()
    assert observer.seen == [1] and s.shadow_off
    assert v2.count == 1 and v1.count == 4


async def test_divergences_show_a_private_round_from_its_context(tmp_path: Path,
                                                                 scripted_server: Start
                                                                 ) -> None:
    from shadow_burnin.render.divergences import row

    shared = "lorem ipsum " * 10  # 120 characters the two replies share
    v1 = await scripted_server(reply=shared + "alpha and the rest of it")
    v2 = await scripted_server(reply=shared + "beta and the rest of it")
    async with session(tmp_path, v1.url, v2.url) as (url, s):
        await post(url, "/v1/completions", {"prompt": "p", "temperature": 0})
        await wait_rounds(s, 1)
    [r] = rounds(tmp_path)
    assert r["bucket"] == "no-match" and r["v1"]["text"] is None
    ctx = row(r, width=20)["context"]
    assert ctx["at"] == 120 and ctx["cut_left"]
    assert ctx["before"] == shared[-20:]
    assert ctx["v1"] == "alpha and the rest o" and ctx["v2"] == "beta and the rest of"
    assert ctx["cut_right"] == {"v1": True, "v2": True}


@pytest.mark.parametrize("stream", [False, True])
async def test_llama_cpp_native_requests_are_compared(tmp_path: Path, scripted_server: Start,
                                                      stream: bool) -> None:
    v1 = await scripted_server(reply="native words here")
    v2 = await scripted_server(reply="native words there")
    async with session(tmp_path, v1.url, v2.url) as (url, s):
        status, _ = await post(url, "/completion", {"prompt": "p", "n_predict": 8,
                                                    "temperature": 0, "stream": stream})
        assert status == 200
        await wait_rounds(s, 1)
    [r] = rounds(tmp_path)
    assert r["category"] == "mirror-native" and r["bucket"] == "no-match"
    assert r["divergence_byte"] == len("native words ")
    assert r["v1"]["error"] is None and r["v1"]["finish_reason"] == "stop"


async def test_a_full_batch_is_committed_before_its_window_ends(
        tmp_path: Path, scripted_server: Start, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rounds arriving faster than the window: once ``COMMIT_BATCH`` of them wait, they are
    committed at once (the window never lets the backlog fill and drop rounds)."""
    from shadow_burnin.app import mirror as app_mirror

    monkeypatch.setattr(app_mirror, "COMMIT_BATCH", 4)
    v1 = await scripted_server(reply="same")
    v2 = await scripted_server(reply="same")
    sizes: list[int] = []
    async with session(tmp_path, v1.url, v2.url, commit_every=3600.0) as (url, s):
        append_many = s.store.append_many

        def counting(records: list[dict[str, Any]]) -> None:
            sizes.append(len(records))
            append_many(records)

        s.store.append_many = counting  # type: ignore[method-assign]
        async with aiohttp.ClientSession() as http:
            for i in range(13):
                async with http.post(url + "/v1/completions", json={
                        "prompt": f"p{i}", "temperature": 0}) as resp:
                    assert resp.status == 200
                    await resp.read()
        for _ in range(500):  # bounded: the first round and two batches of 4 committed
            if sum(sizes) >= 9:
                break
            await asyncio.sleep(0.01)
        assert sum(sizes) >= 9, sizes  # long before the hour's window ended
        assert s.stats.log_dropped == 0
    assert sum(sizes) == 13 and sizes[0] == 1  # the first round went at once
    assert [r["round"] for r in rounds(tmp_path)] == list(range(1, 14))


@pytest.mark.parametrize("every", [None, 0.05])
async def test_rounds_finished_close_together_share_one_commit(
        tmp_path: Path, scripted_server: Start, every: float | None) -> None:
    """Group commit: commits are at least ``commit_every`` apart (default
    ``COMMIT_EVERY``), so a trickle of rounds (one request at a time) lands in batches,
    and every round is in the log at the end."""
    from shadow_burnin.app import mirror as app_mirror

    window = app_mirror.COMMIT_EVERY if every is None else every
    options = {} if every is None else {"commit_every": every}

    v1 = await scripted_server(reply="same")
    v2 = await scripted_server(reply="same")
    commits: list[tuple[float, int]] = []
    loop = asyncio.get_running_loop()
    async with session(tmp_path, v1.url, v2.url, **options) as (url, s):
        assert s.log.commit_every == window
        append_many = s.store.append_many

        def counting(records: list[dict[str, Any]]) -> None:
            commits.append((loop.time(), len(records)))
            append_many(records)

        s.store.append_many = counting  # type: ignore[method-assign]
        async with aiohttp.ClientSession() as http:
            for i in range(30):  # one at a time
                async with http.post(url + "/v1/completions", json={
                        "prompt": f"p{i}", "temperature": 0}) as resp:
                    assert resp.status == 200
                    await resp.read()
    assert sum(n for _t, n in commits) == 30
    assert [r["round"] for r in rounds(tmp_path)] == list(range(1, 31))
    # commits start at least COMMIT_EVERY apart (lag only spaces them more), but for
    # the last one, at close, which does not wait
    span = commits[-2][0] - commits[0][0] if len(commits) > 1 else 0.0
    assert len(commits) <= span / window + 3, commits
    assert max(n for _t, n in commits) > 1
    # the window is the one asked for: two commits (but the last) never start closer
    # than half of it (the other half: the worker thread's own start-up lag)
    starts = [t for t, _n in commits[:-1]]
    assert all(b - a >= window / 2 for a, b in itertools.pairwise(starts))
