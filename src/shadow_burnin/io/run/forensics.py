"""Round steps of divergence forensics: logprob verdicts, re-fires and the A/A noise floor.

Each step runs after a round, before it is committed (``io.run.runner.RoundStep``):

- ``LogprobStep`` turns each side's parsed logprobs (``reply.extra["_tokens"]``, set by
  the client) into compact fields: for a ``no-match`` round ``record["forensics"]`` holds
  the verdict, its figures and the tokens ±2 around the first differing token; for a
  ``prefix-only`` round the cause. It also finds out, per side, whether logprobs work,
  and says so once (``Notices``): a side whose replies carry none is not asked for them
  again (its verdicts are ``unexplained``); a side that *rejects* the request (HTTP
  400/422) is asked again without logprobs (that one request only: the side's setting
  changes only once the request without them worked), the round is re-classified, and
  that side is not asked for them again. Every round where both sides replied with
  logprobs (exact rounds too) gets ``record["tokstats"]`` (``core.tokstats``: a flat
  object of numbers over the matched tokens). A side's setting lives on its client
  (``SideClient.logprobs``); the shared request spec is never changed.
- ``RefireStep`` re-sends a non-exact round's prompt to both sides ``n`` times:
  ``record["refire"]`` says ``reproducible`` / ``flaky-v1`` / ``flaky-v2`` / ...
- ``AAStep`` sends every ``every``-th round's prompt twice to v1 (or v1 and ``v1b``) and
  puts the pair inside the round's record under ``"aa"`` (the log keeps one line per
  round), with the pair's noise samples (``core.aa.aa_noise``). It runs first, so that
  with ``--calibrate`` a round's verdict already uses its own A/A pair.

Retries: a forensic request is sent once; the client's one retry (a keep-alive
connection the server had closed) is the only retry policy.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import orjson

from shadow_burnin.config import ForensicsConfig
from shadow_burnin.core.aa import MIN_SAMPLES, NoiseSamples, aa_noise
from shadow_burnin.core.compare import classify
from shadow_burnin.core.outcomes import prefix_cause, refire_outcome
from shadow_burnin.core.prompt import Prompt
from shadow_burnin.core.records import SIDES, SideReply, aa_record
from shadow_burnin.core.tokstats import summarise
from shadow_burnin.core.tokstats import to_json as tokstats_json
from shadow_burnin.core.verdict import Thresholds, Token, token_verdict, token_window
from shadow_burnin.io.clock import now_iso
from shadow_burnin.io.http.client import TOKENS_KEY, Endpoint, RequestSpec, SideClient
from shadow_burnin.io.run.runner import RoundContext, RoundStep

NON_EXACT = ("prefix-only", "no-match")
PROBE_TOKENS = 8  # generated tokens of the logprob cost probe


class Notices:
    """Says each thing once (per key) through ``warn``."""

    def __init__(self, warn: Callable[[str], None]) -> None:
        self._warn = warn
        self.said: dict[str, str] = {}

    def once(self, key: str, message: str) -> None:
        if key not in self.said:
            self.said[key] = message
            self._warn(message)


class NoiseFloor(msgspec.Struct):
    """A/A noise seen so far; with ``calibrate`` it sets τ_tie and τ_drift (each
    max(default, p99), see ``core.aa``)."""

    thresholds: Thresholds = msgspec.field(default_factory=Thresholds)
    calibrate: bool = False
    samples: NoiseSamples = msgspec.field(default_factory=NoiseSamples)
    min_samples: int = MIN_SAMPLES

    def current(self) -> Thresholds:
        if not self.calibrate:
            return self.thresholds
        return self.samples.calibrated(self.thresholds, self.min_samples)


def analyse(bucket: str, r1: dict[str, Any], r2: dict[str, Any], t1: list[Token] | None,
            t2: list[Token] | None, floor: NoiseFloor, k: int) -> dict[str, Any] | None:
    """The ``forensics`` field of a round (or A/A record); None for other buckets."""
    if bucket == "prefix-only":
        return prefix_cause(r1.get("text") or "", r1.get("finish_reason"),
                            r2.get("text") or "", r2.get("finish_reason")).to_json()
    if bucket != "no-match":
        return None
    th = floor.current()
    v = token_verdict(t1, t2, th)
    out = v.to_json()
    if not k:
        out["reason"] = "logprobs off (--logprobs 0)"
    out["k"] = k
    if floor.calibrate:
        out["tau_tie"] = th.tau_tie
        out["tau_drift"] = th.tau_drift
    if v.divergence_token is not None and t1 and t2:
        out["tokens"] = {"v1": token_window(t1, v.divergence_token),
                         "v2": token_window(t2, v.divergence_token)}
    return out


async def ask(client: SideClient, prompt: Any, model: str | None, *,
              logprobs: int | None = None) -> SideReply:
    """One forensic request (the client's own retry is the only one: see the module doc)."""
    return await client.complete(prompt, model, logprobs=logprobs)


def pop_tokens(reply: dict[str, Any]) -> list[Token] | None:
    tokens = reply.pop(TOKENS_KEY, None)
    return tokens if isinstance(tokens, list) else None


def _reply_json(reply: SideReply) -> dict[str, Any]:
    out = reply.to_json()
    out.pop(TOKENS_KEY, None)
    return out


class LogprobStep:
    """Verdicts from logprobs; per-side capability said once."""

    def __init__(self, k: int, floor: NoiseFloor, notices: Notices,
                 max_slowdown: float = 3.0, min_overhead_s: float = 1.0) -> None:
        self.k = k
        self.floor = floor
        self.notices = notices
        self.max_slowdown = max_slowdown
        self.min_overhead_s = min_overhead_s
        self._costed: set[str] = set()

    async def __call__(self, record: dict[str, Any], ctx: RoundContext) -> None:
        asked = {"v1": ctx.v1.logprobs, "v2": ctx.v2.logprobs}  # before this round's changes
        for side, client in (("v1", ctx.v1), ("v2", ctx.v2)):
            if self.k and asked[side] and _rejected(record[side]):
                await self._without_logprobs(record, side, client, ctx)
        tokens = {side: pop_tokens(record[side]) for side in SIDES}
        for side, client in (("v1", ctx.v1), ("v2", ctx.v2)):
            if self.k and self.max_slowdown and side not in self._costed and \
                    client.logprobs and tokens[side]:
                self._costed.add(side)
                await self._cost(side, client, ctx)
        for side, client in (("v1", ctx.v1), ("v2", ctx.v2)):
            reply = record[side]
            if self.k and asked[side] and client.logprobs and reply.get("error") is None \
                    and reply.get("text") and tokens[side] is None \
                    and not reply.get("resent_without_logprobs"):
                client.set_logprobs(0)  # not asked again: they would never come
                self.notices.once(f"{side}-no-logprobs", (
                    f"{side} ({client.endpoint.url}) sends no logprobs with its replies "
                    f"(api {client.spec.api}): not asking it for them from now on; rounds "
                    "that differ get the verdict 'unexplained'"))
        fx = analyse(record["bucket"], record["v1"], record["v2"], tokens["v1"],
                     tokens["v2"], self.floor, self.k)
        if fx is not None:
            record["forensics"] = fx
        stats = token_stats(record, tokens["v1"], tokens["v2"], prompt_chars(ctx.prompt))
        if stats is not None:
            record["tokstats"] = stats

    async def _cost(self, side: str, client: SideClient, ctx: RoundContext) -> None:
        """Once per side: the round's prompt again, PROBE_TOKENS long, without and then
        with logprobs (the prompt is cached by then, so this times generation). A side
        whose logprobs make it ``max_slowdown`` times slower (and ``min_overhead_s`` more)
        is not asked for them again: they would slow the burn-in and skew its latencies."""
        times = []
        for k in (0, client.logprobs):
            body = client.body(ctx.prompt, ctx.models.get(side), logprobs=k)
            key = client.dialect.max_tokens_key
            body[key] = min(int(body.get(key) or PROBE_TOKENS), PROBE_TOKENS)
            reply = await client.post(orjson.dumps(body), want_logprobs=bool(k))
            if not reply.replied or not reply.latency_ms:
                return
            times.append(reply.latency_ms / 1000)
        t0, t1 = times
        if t1 > self.max_slowdown * t0 and t1 - t0 > self.min_overhead_s:
            client.set_logprobs(0)
            self.notices.once(f"{side}-slow-logprobs", (
                f"{side} ({client.endpoint.url}) takes {t1 / t0:.1f}x as long with logprobs "
                f"({t1:.1f} s vs {t0:.1f} s for {PROBE_TOKENS} tokens): not asking it for "
                "them from now on; rounds that differ get the verdict 'unexplained' "
                "([forensics] max_slowdown = 0 keeps them)"))

    async def _without_logprobs(self, record: dict[str, Any], side: str, client: SideClient,
                                ctx: RoundContext) -> None:
        """The side refused the request with logprobs: ask again without them; if that
        works, it does not support them: re-classify the round and stop asking."""
        error = record[side]["error"]
        again = await ask(client, ctx.prompt, ctx.models.get(side), logprobs=0)
        if not again.replied:
            return  # not a logprob problem after all: the side's setting stays
        client.set_logprobs(0)
        self.notices.once(f"{side}-rejects-logprobs", (
            f"{side} ({client.endpoint.url}) rejects requests with logprobs ({error}); "
            f"asking it without logprobs from now on: rounds that differ get the verdict "
            "'unexplained'"))
        reply = _reply_json(again)
        reply["resent_without_logprobs"] = True
        record[side] = reply
        t1 = record["v1"].get("text") if record["v1"].get("error") is None else None
        t2 = record["v2"].get("text") if record["v2"].get("error") is None else None
        cmp = classify(t1, t2)
        record.update(bucket=cmp.bucket, divergence_byte=cmp.divergence_byte,
                      prefix_match_chars=cmp.prefix_match_chars)


def prompt_chars(prompt: Prompt) -> int:
    """The prompt's length in characters (chat: the messages' contents together)."""
    if prompt.prompt is not None:
        return len(prompt.prompt)
    return sum(len(m.content) for m in prompt.messages or ())


def token_stats(record: dict[str, Any], t1: list[Token] | None, t2: list[Token] | None,
                context: int | None = None) -> dict[str, Any] | None:
    """The round's ``tokstats`` (``core.tokstats``), when both sides replied with
    logprobs (every bucket where both replied: exact rounds too); ``context``: the
    prompt's length in characters."""
    if record["v1"].get("error") is not None or record["v2"].get("error") is not None:
        return None
    stats = summarise(t1, t2, context)
    return None if stats is None else tokstats_json(stats)


def _rejected(reply: dict[str, Any]) -> bool:
    error = reply.get("error") or ""
    return error.startswith(("http-400", "http-422"))


class RefireStep:
    """Re-sends a non-exact round's prompt ``n`` times to both sides."""

    def __init__(self, n: int) -> None:
        self.n = n

    async def __call__(self, record: dict[str, Any], ctx: RoundContext) -> None:
        if self.n <= 0 or record["bucket"] not in NON_EXACT:
            return
        again: dict[str, list[str | None]] = {"v1": [], "v2": []}
        for _ in range(self.n):
            r1, r2 = await asyncio.gather(ask(ctx.v1, ctx.prompt, ctx.models.get("v1")),
                                          ask(ctx.v2, ctx.prompt, ctx.models.get("v2")))
            again["v1"].append(r1.text if r1.replied else None)
            again["v2"].append(r2.text if r2.replied else None)
        record["refire"] = refire_outcome(record["v1"]["text"], record["v2"]["text"],
                                          again["v1"], again["v2"]).to_json()


class AAStep:
    """Every ``every``-th round: the prompt twice to v1 (or v1 then ``v1b``); the pair
    (both replies, bucket, forensics, noise) goes inside the round under ``"aa"``."""

    def __init__(self, every: int, k: int, floor: NoiseFloor,
                 v1b: SideClient | None = None) -> None:
        self.every = every
        self.k = k
        self.floor = floor
        self.v1b = v1b

    async def __call__(self, record: dict[str, Any], ctx: RoundContext) -> None:
        if self.every <= 0 or record["round"] % self.every:
            return
        model = ctx.models.get("v1")
        ts = now_iso()
        ra = await ask(ctx.v1, ctx.prompt, model)
        rb = await ask(self.v1b or ctx.v1, ctx.prompt, model)
        ta, tb = ra.extra.pop(TOKENS_KEY, None), rb.extra.pop(TOKENS_KEY, None)
        cmp = classify(ra.text if ra.replied else None, rb.text if rb.replied else None)
        a, b = _reply_json(ra), _reply_json(rb)
        aa: dict[str, Any] = {
            "ts": ts, "target": "v1b" if self.v1b else "v1", "bucket": cmp.bucket,
            "divergence_byte": cmp.divergence_byte,
            "prefix_match_chars": cmp.prefix_match_chars, "a": a, "b": b,
        }
        fx = analyse(cmp.bucket, a, b, ta, tb, self.floor, self.k)
        if fx is not None:
            aa["forensics"] = fx
        if isinstance(ta, list) and isinstance(tb, list) and ta and tb:
            aa["noise"] = aa_noise(ta, tb)
        record["aa"] = aa
        self.floor.samples.add(aa_record(record) or {})


_FORENSICS = ForensicsConfig()  # the defaults are the [forensics] section's


class ForensicsPlan(msgspec.Struct, frozen=True):
    """What ``run`` asks of forensics (see config ``[forensics]``)."""

    logprobs: int = _FORENSICS.logprobs
    refire: int = _FORENSICS.refire
    aa_every: int = _FORENSICS.aa_every
    v1b: Endpoint | None = None
    thresholds: Thresholds = msgspec.field(default_factory=Thresholds)
    calibrate: bool = _FORENSICS.calibrate
    aa_noise: NoiseSamples | None = None  # samples from the log so far (--calibrate)
    min_samples: int = MIN_SAMPLES  # per threshold, before calibration changes it
    max_slowdown: float = _FORENSICS.max_slowdown
    min_overhead_s: float = 1.0


@contextlib.asynccontextmanager
async def forensic_steps(plan: ForensicsPlan, spec: RequestSpec,
                         warn: Callable[[str], None], secrets: tuple[str | None, ...] = ()
                         ) -> AsyncIterator[list[RoundStep]]:
    """The steps for a run, in order (A/A, verdict, re-fire); opens the v1b client.
    The A/A step goes first so that a calibrated verdict counts the round's own A/A pair;
    its record is still logged after the round's."""
    seed = plan.aa_noise or NoiseSamples()
    floor = NoiseFloor(plan.thresholds, plan.calibrate,
                       NoiseSamples(list(seed.swings), list(seed.moves), list(seed.drifts)),
                       plan.min_samples)
    notices = Notices(warn)
    steps: list[RoundStep] = [LogprobStep(plan.logprobs, floor, notices, plan.max_slowdown,
                                          plan.min_overhead_s)]
    if plan.refire > 0:
        steps.append(RefireStep(plan.refire))
    if plan.aa_every <= 0:
        yield steps
        return
    if plan.v1b is None:
        yield [AAStep(plan.aa_every, plan.logprobs, floor), *steps]
        return
    async with SideClient(plan.v1b, spec, secrets) as v1b:
        yield [AAStep(plan.aa_every, plan.logprobs, floor, v1b), *steps]
