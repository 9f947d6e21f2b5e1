"""``preflight``: can a byte-for-byte burn-in of these two servers mean anything?

Before a long run, in seconds, ask both servers what they expose and compare:

* **model identity** — ``/v1/models`` (ids; llama.cpp adds ``meta``: vocabulary size,
  parameter count, file size, quantisation) and llama.cpp ``/props`` (``model_path``);
* **tokenisation** — llama.cpp ``/tokenize`` of a sample of the prompts (plus the longest
  ones) on both sides, token ids compared;
* **sampler defaults** — ``/props`` ``default_generation_settings``: the settings that
  still change a greedy (temperature 0) reply — penalties, DRY, ``ignore_eos`` — must be
  equal; the others (top-k, top-p, …) are listed when they differ but are harmless at
  temperature 0;
* **determinism** — a quick A/A per side: the same prompt twice, byte-identical replies;
* **context** — the per-slot ``n_ctx`` against the longest prompt's token count plus the
  reply's ``max_tokens``.

Gathering (:func:`probe`) is I/O; judging (:func:`judge`) is pure and gives one
:class:`Finding` per check, each with the setting to change when it fails. A ``fatal``
finding makes the byte comparison meaningless (``preflight`` exits 1).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from pathlib import PurePath
from typing import Any, Literal

import aiohttp
import msgspec
import orjson

from shadow_burnin.config import Config
from shadow_burnin.core.prompt import Prompt, completion_text
from shadow_burnin.core.records import SideReply
from shadow_burnin.io.http.client import APIS, Endpoint, RequestSpec, SideClient

Status = Literal["ok", "mismatch", "warn", "skipped"]
PROBE_TIMEOUT_S = 20.0
LONGEST_EXTRA = 3  # the longest prompts (by characters) always tokenised too

# sampler settings that change a greedy reply: llama.cpp applies penalties and DRY to the
# logits before the greedy pick; ignore_eos changes where a reply ends
GREEDY_RELEVANT = ("repeat_penalty", "repeat_last_n", "presence_penalty",
                   "frequency_penalty", "dry_multiplier", "dry_base", "dry_allowed_length",
                   "dry_penalty_last_n", "ignore_eos", "n_keep")
# settings that do not matter at temperature 0 (the pick is the argmax) but are shown
GREEDY_IRRELEVANT = ("temperature", "top_k", "top_p", "min_p", "typical_p", "top_n_sigma",
                     "xtc_probability", "mirostat", "seed")
META_KEYS = ("n_vocab", "n_params", "size", "ftype", "n_embd", "vocab_type")
FIX = {
    "repeat_penalty": "start both servers with the same --repeat-penalty (1.0 is off), or "
                      "send \"repeat_penalty\": 1.0 in every request ([request] extra)",
    "repeat_last_n": "start both with the same --repeat-last-n",
    "presence_penalty": "start both with the same --presence-penalty (0 is off)",
    "frequency_penalty": "start both with the same --frequency-penalty (0 is off)",
    "ignore_eos": "start both with (or without) --ignore-eos",
    "n_keep": "start both with the same --keep",
}


class Finding(msgspec.Struct, frozen=True):
    """One check's outcome; ``fix`` names the setting to change when it is not ok."""

    check: str
    status: Status
    detail: str
    fix: str = ""
    fatal: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"check": self.check, "status": self.status, "fatal": self.fatal,
                "detail": self.detail, "fix": self.fix}


class SideFacts(msgspec.Struct):
    """What one server told us. ``None``: it does not expose that (or it failed)."""

    url: str
    models: list[dict[str, Any]] | None = None
    props: dict[str, Any] | None = None
    tokens: dict[str, list[int]] | None = None  # prompt id → token ids (/tokenize)
    aa: tuple[SideReply, SideReply] | None = None
    notes: list[str] = msgspec.field(default_factory=list)


class Preflight(msgspec.Struct, frozen=True):
    """The verdict: ``ok`` when no finding is fatal (exit 0), else exit 1."""

    findings: tuple[Finding, ...]
    prompts_checked: int
    longest_tokens: int | None

    @property
    def ok(self) -> bool:
        return not any(f.fatal for f in self.findings)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "prompts_tokenised": self.prompts_checked,
                "longest_prompt_tokens": self.longest_tokens,
                "findings": [f.to_json() for f in self.findings]}


def sample_prompts(prompts: Sequence[Prompt], n: int) -> list[Prompt]:
    """``n`` prompts spread evenly over the list, plus the longest few (by characters)."""
    if not prompts:
        return []
    step = max(1, len(prompts) // max(1, n))
    picked = {p.id: p for p in list(prompts)[::step][:n]}
    for p in sorted(prompts, key=lambda q: len(completion_text(q)), reverse=True)[
            :LONGEST_EXTRA]:
        picked.setdefault(p.id, p)
    return list(picked.values())


# ---- gathering (I/O) ---------------------------------------------------------------


async def _get_json(client: SideClient, path: str) -> Any:
    url = client.endpoint.url.rstrip("/") + path
    with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError,
                             orjson.JSONDecodeError, ValueError):
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            async with client.session.get(url, headers=_headers(client),
                                          allow_redirects=False) as resp:
                if resp.status == 200:
                    return orjson.loads(await resp.read())
    return None


async def _tokenize(client: SideClient, text: str) -> list[int] | None:
    url = client.endpoint.url.rstrip("/") + "/tokenize"
    body = orjson.dumps({"content": text, "add_special": True})
    with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError,
                             orjson.JSONDecodeError, ValueError):
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            async with client.session.post(url, data=body, headers=_headers(client),
                                           allow_redirects=False) as resp:
                if resp.status != 200:
                    return None
                data = orjson.loads(await resp.read())
        tokens = data.get("tokens") if isinstance(data, dict) else None
        if isinstance(tokens, list) and all(isinstance(t, int) for t in tokens):
            return tokens
    return None


def _headers(client: SideClient) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if client.endpoint.api_key:
        headers["Authorization"] = f"Bearer {client.endpoint.api_key}"
    return headers


async def _probe_side(endpoint: Endpoint, spec: RequestSpec, prompts: Sequence[Prompt],
                      aa_prompt: Prompt | None) -> SideFacts:
    facts = SideFacts(endpoint.url)
    async with SideClient(endpoint, spec) as client:
        models = await _get_json(client, "/v1/models")
        if isinstance(models, dict) and isinstance(models.get("data"), list):
            facts.models = [m for m in models["data"] if isinstance(m, dict)]
        props = await _get_json(client, "/props")
        facts.props = props if isinstance(props, dict) else None
        tokens: dict[str, list[int]] = {}
        for p in prompts:
            ids = await _tokenize(client, completion_text(p))
            if ids is None:
                break
            tokens[p.id] = ids
        facts.tokens = tokens if tokens and len(tokens) == len(prompts) else None
        if aa_prompt is not None:
            first = await client.complete(aa_prompt)
            second = await client.complete(aa_prompt)
            facts.aa = (first, second)
    return facts


async def probe(v1: Endpoint, v2: Endpoint, prompts: Sequence[Prompt], *,
                api: str = "completions", max_tokens: int = 16, sample: int = 16,
                extra: Mapping[str, Any] | None = None
                ) -> tuple[SideFacts, SideFacts, list[Prompt]]:
    """Ask both servers (concurrently) what :func:`judge` needs."""
    picked = sample_prompts(prompts, sample)
    spec = RequestSpec(api=api, max_tokens=max_tokens, stream=False,  # type: ignore[arg-type]
                       timeout_s=60.0, extra=dict(extra or {}))
    aa_prompt = picked[0] if picked else None
    f1, f2 = await asyncio.gather(_probe_side(v1, spec, picked, aa_prompt),
                                  _probe_side(v2, spec, picked, aa_prompt))
    return f1, f2, picked


def run_preflight(v1: Endpoint, v2: Endpoint, prompts: Sequence[Prompt], *,
                  api: str = "completions", max_tokens: int = 16, sample: int = 16,
                  run_max_tokens: int = 64, extra: Mapping[str, Any] | None = None
                  ) -> Preflight:
    """Probe both servers and judge: the use case behind ``shadow-burnin preflight``.
    ``extra``: the run's extra request fields (sent with the A/A requests too)."""
    f1, f2, picked = asyncio.run(probe(v1, v2, prompts, api=api, max_tokens=max_tokens,
                                       sample=sample, extra=extra))
    return judge(f1, f2, picked, run_max_tokens=run_max_tokens, sent=extra)


def preflight_for(cfg: Config, *, max_tokens: int = 16, sample: int = 16) -> Preflight:
    """``preflight`` for a config: its prompts, both sides (with their API keys), its
    request API, ``max_tokens`` and extra fields."""
    from shadow_burnin.app.burnin import api_key, load_prompts

    v1, v2 = (Endpoint(sc.url, sc.model, api_key(sc.api_key_env, name), cfg.run.insecure)
              for name, sc in (("v1", cfg.v1), ("v2", cfg.v2)))
    return run_preflight(v1, v2, load_prompts(cfg), api=cfg.request.api,
                         max_tokens=max_tokens, sample=sample,
                         run_max_tokens=cfg.request.max_tokens, extra=cfg.request.extra)


__all__ = ["APIS", "Preflight", "preflight_for", "run_preflight"]


# ---- judging (pure) ----------------------------------------------------------------


def _gen_params(props: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if props is None:
        return None
    dgs = props.get("default_generation_settings")
    if not isinstance(dgs, dict):
        return None
    params = dgs.get("params")  # newer llama.cpp nests them; older ones did not
    return params if isinstance(params, dict) else dgs


def slot_ctx(props: Mapping[str, Any] | None) -> int | None:
    """The context one request gets: per-slot ``n_ctx`` from ``/props``."""
    if props is None:
        return None
    dgs = props.get("default_generation_settings")
    for source in (dgs if isinstance(dgs, dict) else {}, props):
        value = source.get("n_ctx")
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return abs(float(a) - float(b)) <= 1e-6 * max(1.0, abs(float(a)))
        except (TypeError, ValueError):
            return False
    return bool(a == b)


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def check_identity(f1: SideFacts, f2: SideFacts) -> list[Finding]:
    out: list[Finding] = []
    m1, m2 = f1.models, f2.models
    if m1 and m2:
        meta1 = m1[0].get("meta") if isinstance(m1[0].get("meta"), dict) else None
        meta2 = m2[0].get("meta") if isinstance(m2[0].get("meta"), dict) else None
        if meta1 and meta2:
            diffs = [f"{k} {_fmt(meta1[k])} vs {_fmt(meta2[k])}" for k in META_KEYS
                     if k in meta1 and k in meta2 and not _same(meta1[k], meta2[k])]
            if diffs:
                out.append(Finding("model", "mismatch", "different model: " + "; ".join(diffs),
                                   "serve the same GGUF file (same weights and quantisation) "
                                   "on both sides", fatal=True))
            else:
                out.append(Finding("model", "ok", "same model metadata (" + ", ".join(
                    k for k in META_KEYS if k in meta1 and k in meta2) + ")"))
        ids1 = [str(m.get("id")) for m in m1]
        ids2 = [str(m.get("id")) for m in m2]
        if ids1 != ids2 and not out:
            out.append(Finding("model", "warn", f"model ids differ: {ids1[0]} vs {ids2[0]}; "
                               "nothing else exposed to compare",
                               "check both serve the same weights"))
        elif ids1 != ids2:
            out.append(Finding("model-id", "warn",
                               f"served names differ: {ids1[0]} vs {ids2[0]} (an alias only)"))
    else:
        missing = [f.url for f in (f1, f2) if not f.models]
        out.append(Finding("model", "skipped", "no /v1/models from " + ", ".join(missing)))
    p1 = f1.props.get("model_path") if f1.props else None
    p2 = f2.props.get("model_path") if f2.props else None
    if isinstance(p1, str) and isinstance(p2, str):
        n1, n2 = PurePath(p1).name, PurePath(p2).name
        if n1 != n2:
            out.append(Finding("model-file", "warn", f"model files named differently: {n1} vs "
                               f"{n2}", "make sure both are the same file (compare checksums)"))
    return out


def check_tokens(f1: SideFacts, f2: SideFacts, picked: Sequence[Prompt]) -> list[Finding]:
    if f1.tokens is None or f2.tokens is None:
        missing = [f.url for f in (f1, f2) if f.tokens is None]
        return [Finding("tokenisation", "skipped", "no /tokenize on " + ", ".join(missing))]
    bad: list[str] = []
    for p in picked:
        t1, t2 = f1.tokens.get(p.id, []), f2.tokens.get(p.id, [])
        if t1 != t2:
            at = next((i for i, (a, b) in enumerate(zip(t1, t2, strict=False)) if a != b),
                      min(len(t1), len(t2)))
            bad.append(f"{p.id} (token {at}: {t1[at] if at < len(t1) else '-'} vs "
                       f"{t2[at] if at < len(t2) else '-'}; {len(t1)} vs {len(t2)} tokens)")
    if bad:
        bos = any(f1.tokens[p.id][1:] == f2.tokens[p.id] or f2.tokens[p.id][1:] ==
                  f1.tokens[p.id] for p in picked if f1.tokens[p.id] != f2.tokens[p.id])
        fix = ("one side drops the BOS token: set add_bos_token the same on both (same "
               "GGUF tokenizer metadata)" if bos else
               "serve the same tokenizer (same GGUF, same tokenizer.json) on both sides")
        return [Finding("tokenisation", "mismatch",
                        f"{len(bad)} of {len(picked)} prompts tokenised differently: "
                        + "; ".join(bad[:3]), fix, fatal=True)]
    return [Finding("tokenisation", "ok", f"{len(picked)} prompts, same token ids")]


def check_sampler(f1: SideFacts, f2: SideFacts,
                  sent: Mapping[str, Any] | None = None) -> list[Finding]:
    """Server defaults compared; a setting the run sends in every request (``sent``:
    the request's extra fields) overrides both defaults and is only noted."""
    g1, g2 = _gen_params(f1.props), _gen_params(f2.props)
    if g1 is None or g2 is None:
        missing = [f.url for f, g in ((f1, g1), (f2, g2)) if g is None]
        return [Finding("sampler", "skipped", "no /props sampler defaults on "
                        + ", ".join(missing))]
    out: list[Finding] = []
    for key in GREEDY_RELEVANT:
        if key in g1 and key in g2 and not _same(g1[key], g2[key]):
            if key == "repeat_last_n" and all(_same(g.get("repeat_penalty"), 1.0)
                                              for g in (g1, g2)):
                continue  # no penalty on either side: the window does not matter
            if key.startswith("dry_") and key != "dry_multiplier" and all(
                    _same(g.get("dry_multiplier"), 0.0) for g in (g1, g2)):
                continue
            if sent and key in sent:
                out.append(Finding(f"sampler.{key}", "warn",
                                   f"{key} defaults differ ({_fmt(g1[key])} vs "
                                   f"{_fmt(g2[key])}) but every request sends "
                                   f"{key} = {_fmt(sent[key])}"))
                continue
            out.append(Finding(f"sampler.{key}", "mismatch",
                               f"{key} {_fmt(g1[key])} on v1 vs {_fmt(g2[key])} on v2: it "
                               "changes greedy replies",
                               FIX.get(key, f"start both servers with the same {key}"),
                               fatal=True))
    soft = [f"{k} {_fmt(g1[k])} vs {_fmt(g2[k])}" for k in GREEDY_IRRELEVANT
            if k in g1 and k in g2 and not _same(g1[k], g2[k])]
    if soft:
        out.append(Finding("sampler.other", "warn", "differ, harmless at temperature 0: "
                           + "; ".join(soft)))
    if not out:
        out.append(Finding("sampler", "ok", "same greedy-relevant defaults ("
                           + ", ".join(k for k in GREEDY_RELEVANT if k in g1 and k in g2)
                           + ")"))
    return out


def check_determinism(facts: SideFacts, side: str) -> list[Finding]:
    if facts.aa is None:
        return [Finding(f"determinism.{side}", "skipped", "no prompt to send")]
    a, b = facts.aa
    if not a.replied or not b.replied:
        err = a.error if not a.replied else b.error
        return [Finding(f"determinism.{side}", "mismatch", f"{side} did not reply: {err}",
                        f"check {side} is up at {facts.url} and serves the API", fatal=True)]
    if a.text != b.text:
        return [Finding(f"determinism.{side}", "mismatch",
                        f"{side} gave two different replies to the same prompt at "
                        "temperature 0", "turn off prompt caching (cache_prompt false) and "
                        "continuous batching with other traffic (one slot, -np 1), fix the seed",
                        fatal=True)]
    return [Finding(f"determinism.{side}", "ok",
                    f"same prompt twice: byte-identical ({len(a.text or '')} chars)")]


def check_context(f1: SideFacts, f2: SideFacts, run_max_tokens: int) -> tuple[
        list[Finding], int | None]:
    lengths = [len(ids) for f in (f1, f2) if f.tokens for ids in f.tokens.values()]
    longest = max(lengths) if lengths else None
    out: list[Finding] = []
    for side, facts in (("v1", f1), ("v2", f2)):
        n_ctx = slot_ctx(facts.props)
        if n_ctx is None or longest is None:
            out.append(Finding(f"context.{side}", "skipped",
                               "n_ctx or prompt token counts not exposed"))
        elif longest + run_max_tokens > n_ctx:
            out.append(Finding(f"context.{side}", "mismatch",
                               f"{side} n_ctx {n_ctx} < longest prompt {longest} tokens + "
                               f"max_tokens {run_max_tokens}: replies would be cut or shifted",
                               f"start {side} with a context of at least "
                               f"{longest + run_max_tokens} tokens (-c / n_ctx)", fatal=True))
        else:
            out.append(Finding(f"context.{side}", "ok", f"n_ctx {n_ctx} ≥ {longest} + "
                               f"{run_max_tokens}"))
    return out, longest


def judge(f1: SideFacts, f2: SideFacts, picked: Sequence[Prompt], *,
          run_max_tokens: int = 64, sent: Mapping[str, Any] | None = None) -> Preflight:
    """Every check's finding, from what both sides exposed (pure)."""
    ctx, longest = check_context(f1, f2, run_max_tokens)
    findings = [*check_identity(f1, f2), *check_tokens(f1, f2, picked),
                *check_sampler(f1, f2, sent), *check_determinism(f1, "v1"),
                *check_determinism(f2, "v2"), *ctx]
    tokenised = len(picked) if f1.tokens is not None and f2.tokens is not None else 0
    return Preflight(tuple(findings), tokenised, longest)
