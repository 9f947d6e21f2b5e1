"""Forensics steps in a real run loop, against small in-process servers that send logprobs
in llama-server's shape (content[] on /v1/completions), streamed or not."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from shadow_burnin.config_sections import HaltConfig
from shadow_burnin.core.aa import NoiseSamples
from shadow_burnin.core.prompt import Prompt
from shadow_burnin.core.verdict import Thresholds
from shadow_burnin.io.http.client import Endpoint, RequestSpec
from shadow_burnin.io.log.sidecars import events_path
from shadow_burnin.io.log.store import Store
from shadow_burnin.io.run.forensics import ForensicsPlan, forensic_steps
from shadow_burnin.io.run.haltwatch import HaltWatch
from shadow_burnin.io.run.runner import Runner, RunPlan
from shadow_burnin.render.progress import NullProgress

# a reply: [(token, logprob, [(alternative, logprob), ...]), ...]
Reply = list[tuple[str, float, list[tuple[str, float]]]]
PROMPTS = [Prompt(id=f"p{i}", category="c", prompt=f"prompt {i}") for i in range(4)]
FIXED = Thresholds(tau_tie=0.1, tau_drift=0.05, tau_regress=0.5)  # set by hand (the rule)
SAME: Reply = [("The", -0.1, [("A", -3.0)]), (" cat", -0.2, [(" dog", -2.0)])]


def reply(*tokens: tuple[str, float, list[tuple[str, float]]]) -> Reply:
    return [*SAME, *tokens]


class LogprobServer:
    """Answers /v1/completions with ``script(n)`` (n = request number from 1)."""

    def __init__(self, script: Callable[[int], Reply], *, logprobs: bool = True,
                 reject_logprobs: bool = False, finish: str = "stop",
                 slow_logprobs_s: float = 0.0, status: int = 200) -> None:
        self.script, self.logprobs, self.reject = script, logprobs, reject_logprobs
        self.finish, self.slow, self.status = finish, slow_logprobs_s, status
        self.bodies: list[dict[str, Any]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/v1/models":
            return web.json_response({"data": [{"id": "m"}]})
        body = await request.json()
        self.bodies.append(body)
        if (self.reject and "logprobs" in body) or self.status != 200:
            await asyncio.sleep(0.01)  # long enough for other rounds to start meanwhile
            return web.json_response({"error": "logprobs not supported"},
                                     status=400 if self.status == 200 else self.status)
        if "logprobs" in body and self.slow:
            await asyncio.sleep(self.slow)
        toks = self.script(len(self.bodies))
        entries = [{"token": t, "bytes": list(t.encode()), "logprob": lp,
                    "top_logprobs": [{"token": a, "bytes": list(a.encode()), "logprob": alp}
                                     for a, alp in sorted([(t, lp), *alts],
                                                          key=lambda x: -x[1])]}
                   for t, lp, alts in toks]
        text = "".join(t for t, _lp, _a in toks)
        want = self.logprobs and "logprobs" in body
        if not body.get("stream"):
            choice = {"text": text, "finish_reason": self.finish,
                      "logprobs": {"content": entries} if want else None}
            return web.json_response({"choices": [choice]})
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for (t, _lp, _a), entry in zip(toks, entries, strict=True):
            choice = {"text": t, "finish_reason": None,
                      "logprobs": {"content": [entry]} if want else None}
            await resp.write(b"data: " + orjson.dumps({"choices": [choice]}) + b"\n\n")
        end = {"choices": [{"text": "", "finish_reason": self.finish}]}
        await resp.write(b"data: " + orjson.dumps(end) + b"\n\ndata: [DONE]\n\n")
        return resp


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[LogprobServer], Any]]:
    runners: list[web.AppRunner] = []

    async def start(server: LogprobServer) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", server.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield start
    for runner in runners:
        await runner.cleanup()


async def burn(tmp_path: Path, v1: str, v2: str, *, rounds: int = 2, stream: bool = False,
               concurrency: int = 1, **forensics: Any
               ) -> tuple[list[dict[str, Any]], list[str], Store]:
    spec = RequestSpec(api="completions", stream=stream, max_tokens=8,
                       logprobs=forensics.pop("logprobs", 5))
    plan = RunPlan(v1=Endpoint(v1), v2=Endpoint(v2), spec=spec, setup="s", seed=1,
                   interval=0, rounds=rounds, concurrency=concurrency)
    fplan = ForensicsPlan(logprobs=spec.logprobs,
                          **{"refire": 0, "aa_every": 0, "max_slowdown": 0, **forensics})
    store = Store(tmp_path / "log.jsonl", tmp_path / "log.state")
    store.open()
    warnings: list[str] = []
    try:
        async with forensic_steps(fplan, spec, warnings.append) as steps:
            await Runner(plan, PROMPTS, store, NullProgress(), steps=steps).run()
    finally:
        store.close()
    lines = (tmp_path / "log.jsonl").read_bytes().splitlines()
    return [orjson.loads(line) for line in lines], warnings, store


@pytest.mark.parametrize("stream", [False, True])
async def test_near_tie_verdict_is_logged_compactly(tmp_path: Path, serve: Any,
                                                    stream: bool) -> None:
    v1 = await serve(LogprobServer(lambda n: reply((" sat", -0.70, [(" ran", -0.72)]),
                                                   (".", -0.1, []))))
    v2 = await serve(LogprobServer(lambda n: reply((" ran", -0.69, [(" sat", -0.70)]),
                                                   ("!", -0.1, []))))
    log, warnings, _ = await burn(tmp_path, v1, v2, stream=stream)
    assert warnings == []
    for r in log:
        assert r["bucket"] == "no-match"
        fx = r["forensics"]
        assert fx["verdict"] == "near-tie" and fx["divergence_token"] == 2
        assert (fx["a"], fx["b"]) == (" sat", " ran")
        assert fx["swing"] == pytest.approx(0.03) and fx["k"] == 5
        assert [t["i"] for t in fx["tokens"]["v1"]] == [0, 1, 2, 3]
        assert fx["tokens"]["v2"][2]["top"][1] == [" sat", -0.7]
        assert "_tokens" not in r["v1"] and "logprobs_raw" not in r["v1"]


async def test_regression_and_exact_rounds(tmp_path: Path, serve: Any) -> None:
    v1 = await serve(LogprobServer(lambda n: reply((" sat", -0.1, [(" ran", -3.0)]))))
    v2 = await serve(LogprobServer(lambda n: reply((" sat", -0.1, []))
                                   if n % 2 else reply((" flew", -0.2, [(" sat", -2.5)]))))
    log, _, _ = await burn(tmp_path, v1, v2, rounds=2)
    assert log[0]["bucket"] == "exact" and "forensics" not in log[0]
    assert log[1]["forensics"]["verdict"] == "regression"
    assert "not in v1's top-2" in log[1]["forensics"]["reason"]


async def test_prefix_only_cause(tmp_path: Path, serve: Any) -> None:
    v1 = await serve(LogprobServer(lambda n: SAME, finish="stop"))
    v2 = await serve(LogprobServer(lambda n: reply((" sat", -0.1, [])), finish="length"))
    log, _, _ = await burn(tmp_path, v1, v2, rounds=1)
    assert log[0]["bucket"] == "prefix-only"
    assert log[0]["forensics"] == {"cause": "stop", "shorter": "v1", "reason":
                                   "v1 stopped earlier (finish_reason stop); v2 finished "
                                   "with length"}


async def test_refire_finds_a_flaky_side(tmp_path: Path, serve: Any) -> None:
    v1 = await serve(LogprobServer(lambda n: reply((" sat", -0.5, [(" ran", -0.6)]))))
    # v2 answers differently on every other request: its re-fire changes
    v2 = await serve(LogprobServer(lambda n: reply((" ran", -0.5, [(" sat", -0.6)]))
                                   if n % 2 else SAME))
    log, _, _ = await burn(tmp_path, v1, v2, rounds=2, refire=1)
    assert log[0]["refire"] == {"outcome": "flaky-v2", "n": 1, "v1_same": 1, "v2_same": 0,
                                "pair_exact": 0, "texts": {"v2": ["The cat"]}}
    assert log[1]["bucket"] == "no-match" and log[1]["refire"]["outcome"] == "flaky-v2"


async def test_refire_reproducible(tmp_path: Path, serve: Any) -> None:
    v1 = await serve(LogprobServer(lambda n: reply((" sat", -0.5, [(" ran", -0.6)]))))
    v2 = await serve(LogprobServer(lambda n: reply((" ran", -0.5, [(" sat", -0.6)]))))
    log, _, _ = await burn(tmp_path, v1, v2, rounds=1, refire=2)
    assert log[0]["refire"] == {"outcome": "reproducible", "n": 2, "v1_same": 2,
                                "v2_same": 2, "pair_exact": 0}


async def test_aa_pairs_live_inside_their_round(tmp_path: Path, serve: Any) -> None:
    # v1 disagrees with itself on every other request
    v1 = await serve(LogprobServer(lambda n: reply((" sat", -0.5, [(" ran", -0.52)]))
                                   if n % 2 else reply((" ran", -0.51, [(" sat", -0.52)]))))
    v2 = await serve(LogprobServer(lambda n: reply((" sat", -0.5, []))))
    log, _, store = await burn(tmp_path, v1, v2, rounds=4, aa_every=2)
    assert [r["round"] for r in log] == [1, 2, 3, 4]  # one line per round: wc -l == 4
    assert all("kind" not in r for r in log)
    assert ["aa" in r for r in log] == [False, True, False, True]
    assert store.state.last_round == 4
    aa = log[1]["aa"]
    assert aa["target"] == "v1" and aa["bucket"] == "no-match" and "round" not in aa
    assert aa["a"]["text"] != aa["b"]["text"]
    assert aa["forensics"]["verdict"] == "near-tie"


async def test_aa_goes_to_v1b_and_calibrates(tmp_path: Path, serve: Any) -> None:
    v1 = await serve(LogprobServer(lambda n: reply((" sat", -0.5, [(" ran", -0.6)]))))
    # v1b: another numeric path of v1: the runner-up margins move by 0.3 and 0.1, the
    # second token's logprob by 0.1, and it flips the third token (swing 0.2)
    v1b = LogprobServer(lambda n: [("The", -0.1, [("A", -3.3)]), (" cat", -0.3, [(" dog", -2.0)]),
                                   (" ran", -0.5, [(" sat", -0.6)])])
    v1b_url = await serve(v1b)
    # v2 flips like v1b (swing 0.2) after a prefix drift of 0.08
    v2 = await serve(LogprobServer(lambda n: [("The", -0.1, [("A", -3.0)]),
                                              (" cat", -0.28, [(" dog", -2.0)]),
                                              (" ran", -0.5, [(" sat", -0.6)])]))
    log, _, _ = await burn(tmp_path, v1, v2, rounds=2, aa_every=2, v1b=Endpoint(v1b_url),
                           calibrate=True, thresholds=FIXED, min_samples=1)
    assert [("aa" in r) for r in log] == [False, True]  # the pair inside round 2
    rounds = log
    aa = log[1]["aa"]
    assert len(v1b.bodies) == 1 and aa["target"] == "v1b"
    assert aa["forensics"]["swing"] == pytest.approx(0.2)
    assert aa["noise"]["moves"] == pytest.approx([0.3, 0.1])
    assert aa["noise"]["drifts"] == pytest.approx([0.0, 0.1])
    # round 1, before any A/A pair: the defaults; swing 0.2 > 0.1
    assert rounds[0]["forensics"]["tau_tie"] == 0.1
    assert rounds[0]["forensics"]["tau_drift"] == 0.05
    assert rounds[0]["forensics"]["verdict"] == "unexplained"
    # round 2 counts its own A/A pair (the A/A step runs first): τ_tie = p99 of
    # {0.2, 0.3, 0.1}, τ_drift = p99 of {0, 0.1}
    fx = rounds[1]["forensics"]
    assert fx["tau_tie"] == pytest.approx(0.298) and fx["tau_drift"] == pytest.approx(0.099)
    assert fx["swing"] == pytest.approx(0.2) and fx["prefix_drift"] == pytest.approx(0.08)
    assert fx["verdict"] == "near-tie"


async def test_aa_on_one_server_records_zero_noise(tmp_path: Path, serve: Any) -> None:
    # a deterministic v1 against itself: no flip, every move and drift 0: calibration
    # keeps the defaults
    v1 = await serve(LogprobServer(lambda n: reply((" sat", -0.5, [(" ran", -0.6)]))))
    v2 = await serve(LogprobServer(lambda n: reply((" ran", -0.5, [(" sat", -0.6)]))))
    log, _, _ = await burn(tmp_path, v1, v2, rounds=2, aa_every=1, calibrate=True,
                           min_samples=1, thresholds=FIXED)
    aa = [r["aa"] for r in log]
    assert [a["bucket"] for a in aa] == ["exact", "exact"] and "forensics" not in aa[0]
    assert aa[0]["noise"] == {"moves": [0.0, 0.0, 0.0], "drifts": [0.0, 0.0, 0.0]}
    rounds = log
    assert {r["forensics"]["tau_tie"] for r in rounds} == {0.1}
    assert {r["forensics"]["verdict"] for r in rounds} == {"unexplained"}


async def test_calibration_starts_from_the_logs_noise(tmp_path: Path, serve: Any) -> None:
    v1 = await serve(LogprobServer(lambda n: reply((" sat", -0.5, [(" ran", -0.6)]))))
    v2 = await serve(LogprobServer(lambda n: reply((" ran", -0.5, [(" sat", -0.6)]))))
    log, _, _ = await burn(tmp_path, v1, v2, rounds=1, calibrate=True, thresholds=FIXED,
                           aa_noise=NoiseSamples(swings=[0.25], moves=[0.1] * 99,
                                                 drifts=[0.2] * 100))
    fx = log[0]["forensics"]
    assert fx["tau_tie"] == pytest.approx(0.1015) and fx["tau_drift"] == pytest.approx(0.2)
    assert fx["verdict"] == "unexplained"  # swing 0.2 > 0.1015


async def test_calibration_waits_for_enough_samples(tmp_path: Path, serve: Any) -> None:
    # 99 samples of 0.3: their "p99" would be their maximum; the defaults stay
    v1 = await serve(LogprobServer(lambda n: reply((" sat", -0.5, [(" ran", -0.6)]))))
    v2 = await serve(LogprobServer(lambda n: reply((" ran", -0.5, [(" sat", -0.6)]))))
    log, _, _ = await burn(tmp_path, v1, v2, rounds=1, calibrate=True, thresholds=FIXED,
                           aa_noise=NoiseSamples(moves=[0.3] * 99, drifts=[0.3] * 99))
    fx = log[0]["forensics"]
    assert (fx["tau_tie"], fx["tau_drift"], fx["verdict"]) == (0.1, 0.05, "unexplained")


async def test_side_without_logprobs_is_said_once_and_not_asked_again(tmp_path: Path,
                                                                      serve: Any) -> None:
    v1 = await serve(LogprobServer(lambda n: reply((" sat", -0.5, [(" ran", -0.6)]))))
    quiet = LogprobServer(lambda n: reply((" ran", -0.5, [])), logprobs=False)
    v2 = await serve(quiet)
    log, warnings, _ = await burn(tmp_path, v1, v2, rounds=3)
    assert len(warnings) == 1 and warnings[0].startswith("v2 (http://127.0.0.1:")
    assert "sends no logprobs" in warnings[0] and "not asking it" in warnings[0]
    assert all(r["forensics"]["reason"] == "no logprobs from v2" for r in log)
    # the README's promise: asked once, then never again
    assert ["logprobs" in b for b in quiet.bodies] == [True, False, False]


async def test_a_failing_resend_never_changes_other_rounds_requests(tmp_path: Path,
                                                                    serve: Any) -> None:
    """v2 answers 400 to everything: each round asks with logprobs, then once without
    (which fails too, so the side keeps its setting). At concurrency 4 no other round's
    request may go out without logprobs meanwhile (the setting is per request, the
    shared spec is never flipped and restored)."""
    v1 = await serve(LogprobServer(lambda n: reply((" sat", -0.5, [(" ran", -0.6)]))))
    broken = LogprobServer(lambda n: SAME, status=400)
    v2 = await serve(broken)
    log, warnings, _ = await burn(tmp_path, v1, v2, rounds=8, concurrency=4)
    assert [r["bucket"] for r in log] == ["v2-unreachable"] * 8 and warnings == []
    with_lp = sum("logprobs" in b for b in broken.bodies)
    assert (with_lp, len(broken.bodies) - with_lp) == (8, 8)


async def test_one_retry_policy(tmp_path: Path, serve: Any) -> None:
    """A forensic request gets the client's one retry and no other: a v1b that closes
    every connection before answering sees 2 attempts for the A/A request (the old
    forensics retry on top of the client's made it 4)."""
    v1 = await serve(LogprobServer(lambda n: reply((" sat", -0.5, [(" ran", -0.6)]))))
    v2 = await serve(LogprobServer(lambda n: reply((" ran", -0.5, [(" sat", -0.6)]))))
    attempts = []

    async def slam(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        attempts.append(1)
        writer.close()

    server = await asyncio.start_server(slam, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        log, _, _ = await burn(tmp_path, v1, v2, rounds=1, aa_every=1,
                               v1b=Endpoint(f"http://127.0.0.1:{port}"))
    finally:
        server.close()
        await server.wait_closed()
    assert log[0]["aa"]["b"]["error"].startswith("connection-reset")
    assert len(attempts) == 2


async def test_side_rejecting_logprobs_is_asked_without(tmp_path: Path, serve: Any) -> None:
    v1 = await serve(LogprobServer(lambda n: reply((" sat", -0.5, [(" ran", -0.6)]))))
    strict = LogprobServer(lambda n: reply((" ran", -0.5, [])), reject_logprobs=True)
    v2 = await serve(strict)
    log, warnings, _ = await burn(tmp_path, v1, v2, rounds=3)
    assert len(warnings) == 1 and "rejects requests with logprobs (http-400" in warnings[0]
    assert [r["bucket"] for r in log] == ["no-match"] * 3  # not v2-unreachable
    assert log[0]["v2"]["resent_without_logprobs"] is True
    assert "resent_without_logprobs" not in log[1]["v2"]
    assert ["logprobs" in b for b in strict.bodies] == [True, False, False, False]
    assert log[2]["forensics"]["verdict"] == "unexplained"


async def test_logprobs_off(tmp_path: Path, serve: Any) -> None:
    v1 = await serve(LogprobServer(lambda n: reply((" sat", -0.5, []))))
    v2 = await serve(LogprobServer(lambda n: reply((" ran", -0.5, []))))
    log, warnings, _ = await burn(tmp_path, v1, v2, rounds=1, logprobs=0)
    assert warnings == []
    assert log[0]["forensics"]["reason"] == "logprobs off (--logprobs 0)"


async def test_side_with_slow_logprobs_is_not_asked_for_them(tmp_path: Path,
                                                             serve: Any) -> None:
    v1 = await serve(LogprobServer(lambda n: reply((" sat", -0.5, [(" ran", -0.6)]))))
    slow = LogprobServer(lambda n: reply((" ran", -0.5, [(" sat", -0.6)])),
                         slow_logprobs_s=0.3)
    v2 = await serve(slow)
    log, warnings, _ = await burn(tmp_path, v1, v2, rounds=3, max_slowdown=3.0,
                                  min_overhead_s=0.2)
    assert len(warnings) == 1 and warnings[0].startswith("v2 (") and "as long with" in \
        warnings[0]
    # round 1, then the cost probe (without, with), then rounds 2 and 3 without logprobs
    assert ["logprobs" in b for b in slow.bodies] == [True, False, True, False, False]
    assert log[0]["forensics"]["swing"] == pytest.approx(0.2)  # round 1 had logprobs
    assert log[2]["forensics"]["reason"] == "no logprobs from v2"


async def halted_burn(tmp_path: Path, v1: str, v2: str, on: str, rounds: int = 8
                      ) -> tuple[list[dict[str, Any]], list[str]]:
    """A burn-in with the halt watch: which halts ``[halt] on = <on>`` raises."""
    spec = RequestSpec(api="completions", max_tokens=8, logprobs=5)
    plan = RunPlan(v1=Endpoint(v1), v2=Endpoint(v2), spec=spec, setup="s", seed=1,
                   interval=0, rounds=rounds)
    fplan = ForensicsPlan(logprobs=5, refire=0, aa_every=0, max_slowdown=0)
    log = tmp_path / f"{on}.jsonl"
    loud: list[str] = []
    with Store(log, tmp_path / f"{on}.state") as store:
        watch = HaltWatch(HaltConfig(min_rounds=5, on=on), store, loud=loud.append,
                          warn=loud.append)
        watch.prime()
        async with forensic_steps(fplan, spec, loud.append) as steps:
            await Runner(plan, PROMPTS, store, NullProgress(), steps=steps,
                         observers=[watch]).run()
        await watch.drain()
    return [orjson.loads(x) for x in log.read_bytes().splitlines()], loud


async def test_halt_on_regression_ignores_near_ties_and_halts_on_regressions(
        tmp_path: Path, serve: Any) -> None:
    tie1 = await serve(LogprobServer(lambda n: reply((" sat", -0.70, [(" ran", -0.72)]))))
    tie2 = await serve(LogprobServer(lambda n: reply((" ran", -0.69, [(" sat", -0.70)]))))
    far = await serve(LogprobServer(lambda n: reply((" ate", -0.1, [(" ran", -4.0)]))))
    # near-ties only: a no-match spike (halts on "no-match"), no regression
    log, loud = await halted_burn(tmp_path / "a", tie1, tie2, "regression")
    assert {r["forensics"]["verdict"] for r in log} == {"near-tie"}
    assert not events_path(tmp_path / "a" / "regression.jsonl").exists() and loud == []
    log, loud = await halted_burn(tmp_path / "b", tie1, tie2, "no-match")
    assert [e["event"] for e in read_events(tmp_path / "b" / "no-match.jsonl")] == ["halt"]
    assert any("HALT" in x and "no-match" in x for x in loud)
    # v2's token is not in v1's top-K: regressions, and "regression" halts
    log, loud = await halted_burn(tmp_path / "c", tie1, far, "regression")
    assert {r["forensics"]["verdict"] for r in log} == {"regression"}
    events = read_events(tmp_path / "c" / "regression.jsonl")
    assert [e["event"] for e in events] == ["halt"]
    assert events[0]["window"]["on"] == "regression" and events[0]["round"] == 5
    assert events[0]["window"]["regression"] == 5
    assert any("HALT" in x and "regression 100.0 %" in x for x in loud)


def read_events(log: Path) -> list[dict[str, Any]]:
    return [orjson.loads(x) for x in events_path(log).read_bytes().splitlines()]
