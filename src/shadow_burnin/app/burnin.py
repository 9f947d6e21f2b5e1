"""A burn-in session: config → prompts, setup fingerprint, store, plan, forensics and halt
watch, then the run loop. The one API that ``run``, ``demo``, the web app and the mirror
call; the CLI only parses flags and renders.

Policies that live here (not in click commands):

- **setup change** — a state written by another setup (URLs, models, request, prompts)
  is refused unless ``new_run`` (archive the old log/state and start fresh) or ``force``;
- **seed** — a new run takes ``run.seed`` or a random one; a restarted run keeps its own;
- **files** — the log and the state are checked (regular files, not each other's side
  files, not an input) before any lock or side file is created.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import msgspec
from msgspec.structs import replace
from rich.console import Console

from shadow_burnin.app.evidence import summary_of
from shadow_burnin.app.files import check_store_paths, inputs_of
from shadow_burnin.config import Config, fingerprint
from shadow_burnin.core.aa import NoiseSamples, aa_samples
from shadow_burnin.core.mirror import replay_offsets
from shadow_burnin.core.prompt import Prompt, prompts_digest
from shadow_burnin.core.records import aa_records
from shadow_burnin.core.verdict import Thresholds
from shadow_burnin.errors import ConfigError, LogError, SetupChangedError, StateError
from shadow_burnin.inputs import check_input
from shadow_burnin.io.clock import now_stamp
from shadow_burnin.io.http.client import Api, Endpoint, RequestSpec
from shadow_burnin.io.log.logread import iter_records
from shadow_burnin.io.log.logset import closed_segments
from shadow_burnin.io.log.rotation import rotation_of
from shadow_burnin.io.log.store import Store, archive
from shadow_burnin.io.run.forensics import ForensicsPlan, forensic_steps
from shadow_burnin.io.run.haltwatch import HaltWatch
from shadow_burnin.io.run.livewatch import LivenessWatch
from shadow_burnin.io.run.runner import Runner, RunOutcome, RunPlan
from shadow_burnin.prompts import load_builtin, load_file
from shadow_burnin.render.escape import term
from shadow_burnin.render.gates import halt_alert
from shadow_burnin.render.progress import make_progress
from shadow_burnin.secrets import redact

Say = Callable[[str], None]


def load_prompts(cfg: Config) -> list[Prompt]:
    """The prompts of a run: the file of ``run.prompts`` or the built-in corpus (all of
    it validated here, before the run starts: a bad ``max_tokens`` is refused at load)."""
    return load_file(cfg.run.prompts) if cfg.run.prompts else load_builtin()


def api_key(env_name: str | None, side: str) -> str | None:
    """The API key of a side from the environment variable ``api_key_env`` names."""
    if not env_name:
        return None
    value = os.environ.get(env_name)
    if not value:
        raise ConfigError(None, f"{side}.api_key_env: environment variable {env_name} is not set")
    return value


def known_secrets(cfg: Config) -> list[str]:
    """Every API key this config can reach (for ``secrets.redact`` on output)."""
    out = []
    for name in (cfg.v1.api_key_env, cfg.v2.api_key_env):
        value = os.environ.get(name) if name else None
        if value:
            out.append(value)
    return out


def redact_errors(record: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    """A round with each side's ``error`` redacted (``secrets.redact``) for display: a
    log written before servers' echoes were redacted may still hold a key."""
    out = dict(record)
    for side in ("v1", "v2"):
        reply = out.get(side)
        if isinstance(reply, dict) and isinstance(reply.get("error"), str):
            out[side] = {**reply, "error": redact(reply["error"], keys)}
    return out


def plan_for(cfg: Config, setup: str, seed: int) -> RunPlan:
    r = cfg.request
    spec = RequestSpec(api=cast(Api, r.api), max_tokens=r.max_tokens, stream=r.stream,
                       timeout_s=r.timeout, extra=dict(r.extra),
                       max_reply_bytes=r.max_reply_bytes,
                       logprobs=r.logprobs or cfg.forensics.logprobs)
    return RunPlan(
        v1=Endpoint(cfg.v1.url, cfg.v1.model, api_key(cfg.v1.api_key_env, "v1"), cfg.run.insecure),
        v2=Endpoint(cfg.v2.url, cfg.v2.model, api_key(cfg.v2.api_key_env, "v2"), cfg.run.insecure),
        spec=spec, setup=setup, seed=seed, interval=cfg.run.interval, rounds=cfg.run.rounds,
        duration=cfg.run.duration, concurrent=cfg.run.concurrent,
        concurrency=cfg.run.concurrency,
    )


def _aa_records(log: Path) -> list[dict[str, Any]]:
    """A/A results in either layout: inside their round (``"aa"``) or old ``kind: aa``."""
    return list(aa_records(r for _n, _t, r in iter_records(log, split_aa=False)))


def forensics_plan(cfg: Config, plan: RunPlan) -> ForensicsPlan:
    """The forensics of a run from ``[forensics]``; ``calibrate`` reads the log's A/A
    noise samples so far."""
    f = cfg.forensics
    v1b = None
    if f.v1b:
        v1b = Endpoint(f.v1b, plan.v1.model, plan.v1.api_key, plan.v1.insecure)
    noise = NoiseSamples()
    log = Path(cfg.paths.log)
    if f.calibrate and check_input(log, LogError, "log"):
        noise = aa_samples(_aa_records(log))
    return ForensicsPlan(
        logprobs=plan.spec.logprobs, refire=f.refire, aa_every=f.aa_every, v1b=v1b,
        thresholds=Thresholds(f.tau_tie, f.tau_drift, f.tau_regress),
        calibrate=f.calibrate, aa_noise=noise, max_slowdown=f.max_slowdown,
    )


def halt_watch(cfg: Config, store: Store, warn: Say, loud: Say) -> HaltWatch | None:
    """The ``run`` observer for ``[halt]`` (None when ``halt.enabled = false``)."""
    if not cfg.halt.enabled:
        return None
    context = {"log": cfg.paths.log, "v1": cfg.v1.url, "v2": cfg.v2.url}
    watch = HaltWatch(cfg.halt, store, loud=loud, warn=warn, context=context)
    watch.prime()
    return watch


def liveness_watch(cfg: Config, warn: Say) -> LivenessWatch | None:
    """The ``run`` observer for ``[alerts]`` (None when ``alerts.enabled = false``): stall
    and unreachable-spike alerts through the ``[halt]`` alert channel."""
    if not cfg.alerts.enabled:
        return None
    context = {"log": cfg.paths.log, "v1": cfg.v1.url, "v2": cfg.v2.url}
    return LivenessWatch(cfg.alerts, cfg.halt, Path(cfg.paths.log), warn=warn,
                         context=context)


def open_store(cfg: Config, setup: str, *, new_run: bool, force: bool, warn: Say) -> Store:
    """Open (and repair) the log/state; refuse a different setup unless told."""
    log, state = Path(cfg.paths.log), Path(cfg.paths.state)
    check_store_paths(log, state, inputs_of(cfg))
    check_input(log, LogError, "log")  # before the lock or any directory is created
    check_input(state, StateError, "state")
    store = Store(log, state, rotation_of(cfg))
    for message in store.open().warnings:
        warn(message)
    old = store.state.setup
    if store.state.last_round and old is not None and old != setup:
        if new_run:
            store.close()
            archive([*closed_segments(log), log, state], now_stamp(),
                    lambda a, b: warn(f"archived {a} → {b}"))
            store = Store(log, state, rotation_of(cfg))
            store.open()
        elif not force:
            store.close()
            raise SetupChangedError(
                f"{state}: written by a different setup ({old}, now {setup}): URLs, models, "
                "API, request parameters or prompts changed; use --new-run to archive the "
                "old log and start fresh, or --force to continue this log"
            )
    return store


class BurninSession(msgspec.Struct):
    """An opened burn-in: the store is locked until :meth:`close`."""

    cfg: Config
    prompts: list[Prompt]
    store: Store
    plan: RunPlan
    forensics: ForensicsPlan
    secrets: list[str] = msgspec.field(default_factory=list)
    live: LivenessWatch | None = None  # set by ``run`` (tests may set their own first)

    async def run(self, progress: Any, *, notice: Say, loud: Say,
                  on_usr1: Callable[[], None] | None = None) -> RunOutcome:
        """The run loop with forensics, the halt watch and the liveness watch, until
        rounds/duration/signal."""
        watch = halt_watch(self.cfg, self.store, notice, loud)
        if self.live is None:
            self.live = liveness_watch(self.cfg, notice)
        live = self.live
        observers: list[Any] = [o for o in (watch, live) if o is not None]
        async with forensic_steps(self.forensics, self.plan.spec, notice) as steps:
            runner = Runner(self.plan, self.prompts, self.store, progress, on_usr1=on_usr1,
                            steps=steps, observers=observers)
            if live is not None:
                live.start()
            try:
                return await runner.run()
            finally:
                if live is not None:
                    await live.close()  # liveness alerts still in flight
                if watch is not None:
                    await watch.drain()  # halt alerts still in flight

    def close(self) -> None:
        self.store.close()


def open_session(cfg: Config, *, new_run: bool = False, force: bool = False,
                 warn: Say = lambda _m: None,
                 replay_speed: float | None = None) -> BurninSession:
    """Prompts, setup fingerprint, keys, store (locked), seed, plan and forensics plan.
    Everything that can be refused is checked before the store creates any file.
    ``replay_speed``: play the prompts file once, in order, at its captured times
    scaled by this factor (``run --replay``), instead of cycling on the interval."""
    prompts = load_prompts(cfg)
    setup = fingerprint(cfg.fingerprint_fields(prompts_digest(prompts)))
    for side in ("v1", "v2"):  # a missing key variable is refused before any file is made
        api_key(getattr(cfg, side).api_key_env, side)
    store = open_store(cfg, setup, new_run=new_run, force=force, warn=warn)
    try:
        if store.state.seed is None:
            store.state.seed = cfg.run.seed if cfg.run.seed is not None else \
                secrets.randbelow(2**31)
        store.state.setup = setup
        plan = plan_for(cfg, setup, store.state.seed)
        if replay_speed is not None:
            plan = replace(plan, replay=replay_offsets(prompts, replay_speed,
                                                       cfg.run.interval))
        return BurninSession(cfg, prompts, store, plan, forensics_plan(cfg, plan),
                             known_secrets(cfg))
    except BaseException:
        store.close()
        raise


def execute(cfg: Config, *, new_run: bool = False, force: bool = False, quiet: bool = False,
            console: Console | None = None, replay_speed: float | None = None) -> RunOutcome:
    """Run a burn-in with this config, with terminal output (``run`` and ``demo``):
    progress on ``console`` (stdout), warnings and the halt alert on stderr."""
    out = console or Console(soft_wrap=True)  # off a terminal: one line per message,
    err = Console(stderr=True, soft_wrap=True)  # never cut at 80 columns
    keys = known_secrets(cfg)

    def plain(message: str) -> str:
        return term(redact(message, keys))

    def warn(message: str) -> None:
        err.print(f"warning: {plain(message)}", markup=False, highlight=False)

    session = open_session(cfg, new_run=new_run, force=force, warn=warn,
                           replay_speed=replay_speed)
    try:
        progress = make_progress(out, quiet=quiet)

        def notice(message: str) -> None:
            if quiet:
                warn(message)
            else:
                progress.warn(redact(message, keys))

        def loud(message: str) -> None:  # the box wraps its own text
            err.print(halt_alert(redact(message, keys), cfg.paths.log), soft_wrap=False)

        def usr1() -> None:
            from shadow_burnin.render.summary import bench_table

            err.print(bench_table(summary_of(Path(cfg.paths.log))))

        return asyncio.run(session.run(progress, notice=notice, loud=loud, on_usr1=usr1))
    finally:
        session.close()
