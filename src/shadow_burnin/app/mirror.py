"""The mirror session: config → store → proxy → comparison → rounds in the log.

Each mirrored request becomes one round (``"source": "mirror"``) in the same log and
shape as ``run``'s, so bench, gates, divergences and the halt detector read it unchanged.
Buckets: ``core.compare.classify`` of the two texts, except that a side that did not
reply always gives its ``…-unreachable`` bucket; a request that is not byte-comparable
(``core.mirror``) with both sides replying is ``not-comparable``; a client that left
mid-reply gives ``client-cancelled`` (v1's reply is incomplete by the client's doing).

Privacy: by default a round keeps, of the prompt and of each reply, only a SHA-256 and
the length (``prompt_sha256``/``prompt_chars``, ``text_sha256``/``text_chars``; ``text``
is null) and ±40 characters of both replies around the first divergence (``context``);
``keep_text`` keeps the replies and the whole request body (``request``). No header is
ever logged. The capture file (``capture``) holds every mirrored-path request in full:
created 0600, authorization headers never written.

Rounds are committed in the order they complete, by one committer (group commit, one
write and fsync per batch, in a worker thread, at most one batch every ``commit_every``
seconds, ``[mirror] commit_every``, default ``COMMIT_EVERY``, so a steady trickle of rounds
does not cost two fsyncs each): the proxy never waits for the disk. If
the disk falls more than ``BACKLOG`` rounds behind, further rounds are dropped (counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import random
import signal
import stat
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import msgspec
import orjson

from shadow_burnin.config import Config, fingerprint
from shadow_burnin.core.compare import classify
from shadow_burnin.core.mirror import (
    SAMPLING_REASONS,
    capture_line,
    digest,
    divergence_context,
    greedy_copy,
    not_comparable_reason,
    prompt_text,
    text_summary,
)
from shadow_burnin.core.records import Round, SideReply
from shadow_burnin.errors import ConfigError, StorageError
from shadow_burnin.io.http.client import Endpoint
from shadow_burnin.io.log.events import append_event
from shadow_burnin.io.log.rotation import rotation_of
from shadow_burnin.io.log.sidecars import LogFiles
from shadow_burnin.io.log.store import State, Store
from shadow_burnin.io.proxy.mirror import Mirrored, MirrorProxy, ProxyConfig, ProxyStats

BACKLOG = 10_000  # finished rounds waiting for the disk, at most
# seconds between two commits, at least (a group commit window). Each commit is two
# fsyncs, a file created and a rename: kernel and disk work that no scheduling priority of
# the shadow keeps off the CPU serving clients (see README, "Mirror: real traffic")
COMMIT_EVERY = 1.0
COMMIT_BATCH = BACKLOG // 4  # this many rounds waiting: commit now, whatever the window


class Observer(Protocol):
    """What sees committed rounds (``io.run.haltwatch.HaltWatch`` has this shape)."""

    def committed(self, records: list[dict[str, Any]], state: State,
                  stop: Callable[[str], None]) -> None: ...


class MirrorOptions(msgspec.Struct):
    """Everything the session needs besides the store (built from ``Config``)."""

    v1: Endpoint
    v2: Endpoint
    host: str = "127.0.0.1"
    port: int = 8090
    max_queue: int = 1000
    shadow_concurrency: int = 4
    sample: float = 1.0
    timeout: float = 120.0
    v1_timeout: float = 600.0
    max_body: int = 4 * 1024 * 1024
    max_reply_bytes: int = 4 * 1024 * 1024
    force_greedy: bool = False
    keep_text: bool = False
    trust_seed: bool = False
    grace: float = 30.0
    commit_every: float = COMMIT_EVERY
    capture: Path | None = None
    v2_model: str | None = None  # replaces the client's "model" in the shadow copy
    seed: int | None = None  # of the sampler (tests)

    def setup(self) -> str:
        """The fingerprint kept in every mirror round (``mirror.setup``)."""
        return fingerprint({"mirror": {"v1": self.v1.url, "v2": self.v2.url,
                                       "v2_model": self.v2_model,
                                       "force_greedy": self.force_greedy,
                                       "trust_seed": self.trust_seed}})


def options_from(cfg: Config, v1_key: str | None, v2_key: str | None) -> MirrorOptions:
    m = cfg.mirror
    host, port = m.host_port()
    return MirrorOptions(
        v1=Endpoint(cfg.v1.url, cfg.v1.model, v1_key, cfg.run.insecure),
        v2=Endpoint(cfg.v2.url, cfg.v2.model, v2_key, cfg.run.insecure),
        host=host, port=port, max_queue=m.max_queue, shadow_concurrency=m.shadow_concurrency,
        sample=m.sample, timeout=m.timeout, v1_timeout=m.v1_timeout, max_body=m.max_body,
        max_reply_bytes=cfg.request.max_reply_bytes, force_greedy=m.force_greedy_shadow,
        keep_text=m.keep_text, trust_seed=m.trust_seed, grace=m.grace,
        commit_every=m.commit_every,
        capture=Path(m.capture) if m.capture else None, v2_model=cfg.v2.model)


class SessionStats(msgspec.Struct):
    rounds: int = 0  # committed to the log
    log_dropped: int = 0  # finished while the disk was BACKLOG rounds behind
    captured: int = 0
    capture_skipped: int = 0  # requests the prompts format cannot hold
    buckets: dict[str, int] = msgspec.field(default_factory=dict)


class CaptureFile:
    """The capture JSONL: created 0600; an existing file must be 0600 too (it holds user
    data) and is appended to. One ``write`` per line; fsynced on close."""

    def __init__(self, path: Path, log: Path) -> None:
        if LogFiles(log).owns(path):
            raise ConfigError(path, f"refusing to capture into {log} or one of its side files")
        try:
            st = os.stat(path)
        except FileNotFoundError:
            st = None
        except OSError as exc:
            raise ConfigError(path, f"cannot check the capture file: {exc.strerror}") from None
        if st is not None:
            if not stat.S_ISREG(st.st_mode):
                raise ConfigError(path, "capture: not a regular file")
            if st.st_mode & 0o077:
                raise ConfigError(path, f"capture: exists with mode {st.st_mode & 0o777:o}; "
                                  "it holds user data and must be 0600 (chmod 600 it, or "
                                  "pick a new name)")
        try:
            self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                              0o600)
        except OSError as exc:
            raise ConfigError(path, f"capture: cannot open ({exc.strerror})") from None
        os.fchmod(self.fd, 0o600)  # whatever the umask
        self.path = path

    def write(self, line: dict[str, Any]) -> None:
        data = orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.fsync(self.fd)
        os.close(self.fd)


class Front:
    """The client side's decisions, on the client's path (no waiting): capture, sample,
    comparability, the shadow copy's body."""

    def __init__(self, opts: MirrorOptions, stats: SessionStats, log: Path,
                 notice: Callable[[str], None]) -> None:
        self.opts = opts
        self.stats = stats
        self.notice = notice
        self.shadow_off = False  # a halt whose action is "stop"
        self._rng = random.Random(opts.seed)
        self._seq = 0
        self._capture = CaptureFile(opts.capture, log) if opts.capture else None

    def on_request(self, path: str, api: str, body: dict[str, Any], raw: bytes,
                   ts: str) -> Mirrored | None:
        if self._capture is not None:
            self._capture_one(api, body, ts)
        if self.shadow_off or (self.opts.sample < 1.0 and
                               self._rng.random() >= self.opts.sample):
            return None
        reason = not_comparable_reason(body, api, trust_seed=self.opts.trust_seed)
        greedy = self.opts.force_greedy and reason in SAMPLING_REASONS
        shadow = body
        if greedy:
            shadow = greedy_copy(body)
        if self.opts.v2_model is not None and "model" in body:
            shadow = dict(shadow, model=self.opts.v2_model)
        return Mirrored(ts=ts, path=path, api=api, stream=body.get("stream") is True,
                        body=body, shadow_body=raw if shadow is body else orjson.dumps(shadow),
                        greedy=greedy, reason=None if greedy else reason, raw=raw)

    def _capture_one(self, api: str, body: dict[str, Any], ts: str) -> None:
        assert self._capture is not None
        self._seq += 1
        line = capture_line(body, api, ts, f"cap-{ts}-{os.getpid()}-{self._seq}")
        if line is None:
            self.stats.capture_skipped += 1
            return
        try:
            self._capture.write(line)
            self.stats.captured += 1
        except OSError as exc:
            self.stats.capture_skipped += 1
            self.notice(f"capture: cannot write {self._capture.path} ({exc.strerror})")

    def close(self) -> None:
        if self._capture is not None:
            self._capture.close()
            self._capture = None


class RoundLog:
    """Finished jobs → rounds → the store: one committer, group commit in a worker
    thread (the event loop never waits for the disk), observers (the halt watch) after
    each commit."""

    def __init__(self, store: Store, setup: str, *, keep_text: bool, stats: SessionStats,
                 observers: Sequence[Observer] = (),
                 notice: Callable[[str], None] = lambda message: None,
                 on_stop: Callable[[], None] | None = None,
                 commit_every: float = COMMIT_EVERY) -> None:
        self.store = store
        self.commit_every = commit_every
        self.setup = setup
        self.on_stop = on_stop
        self.keep_text = keep_text
        self.stats = stats
        self.observers = list(observers)
        self.notice = notice
        self.shadow_off = False  # set by a halt whose action is "stop"
        self._pending: list[dict[str, Any]] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._hurry = asyncio.Event()  # closing, or COMMIT_BATCH rounds: commit at once
        self._last_commit = 0.0
        self._io = ThreadPoolExecutor(1, thread_name_prefix="shadow-burnin-mirror-commit")
        self._committer: asyncio.Task[None] | None = None

    def on_done(self, job: Mirrored) -> None:
        if len(self._pending) >= BACKLOG:
            self.stats.log_dropped += 1
            return
        self._pending.append(mirror_round(job, self.setup, keep_text=self.keep_text))
        self._wake.set()
        if len(self._pending) >= COMMIT_BATCH:  # a fast stream: never near the backlog
            self._hurry.set()

    def start(self) -> None:
        self._committer = asyncio.create_task(self._commit_loop())

    async def close(self) -> None:
        """Commit every round handed in so far, then stop."""
        self._closing = True
        self._hurry.set()
        self._wake.set()
        if self._committer is not None:
            await self._committer
        self._io.shutdown(wait=True)

    async def _commit_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._pending:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
            wait = self._last_commit + self.commit_every - loop.time()
            if wait > 0 and not self._closing and len(self._pending) < COMMIT_BATCH:
                self._hurry.clear()  # gather the rounds of the next moment
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._hurry.wait(), wait)
            self._last_commit = loop.time()
            batch, self._pending = self._pending, []
            first = self.store.state.last_round + 1
            for i, record in enumerate(batch):
                record["round"] = first + i
            try:
                await loop.run_in_executor(self._io, self.store.append_many, batch)
            except StorageError as exc:
                self.notice(str(exc))
                self.stats.log_dropped += len(batch)
                continue
            self.stats.rounds += len(batch)
            for record in batch:
                b = record["bucket"]
                self.stats.buckets[b] = self.stats.buckets.get(b, 0) + 1
            for observer in self.observers:
                observer.committed(batch, self.store.state, self._observer_stop)

    def _observer_stop(self, reason: str) -> None:
        # a halt with action "stop": the shadow stops, the clients are served as before
        if not self.shadow_off:
            self.notice(f"{reason}: the mirror stops shadowing (clients are still served "
                        "by v1)")
        self.shadow_off = True
        if self.on_stop is not None:
            self.on_stop()


def figures_of(proxy: ProxyStats, stats: SessionStats) -> dict[str, Any]:
    return {"proxy": proxy.to_json(), "rounds": stats.rounds,
            "log_dropped": stats.log_dropped, "captured": stats.captured,
            "capture_skipped": stats.capture_skipped, "buckets": dict(stats.buckets)}


def stats_event(setup: str, figures: dict[str, Any]) -> dict[str, Any]:
    """The ``mirror-stats`` event a session appends to ``<log>.events.jsonl`` at its end."""
    return {"kind": "event", "event": "mirror-stats", "ts": _now(), "setup": setup,
            **figures}


async def run_until_signal(stop: asyncio.Event, tick: Callable[[], None] | None,
                           tick_every: float) -> None:
    """Wait for SIGTERM/SIGINT (or ``stop``), calling ``tick`` every ``tick_every`` s."""
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), tick_every)
            if tick is not None and not stop.is_set():
                tick()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


class MirrorSession:
    """The whole mirror in one process: front, proxy, shadow pool and round log."""

    def __init__(self, opts: MirrorOptions, store: Store,
                 observers: Sequence[Observer] = (),
                 notice: Callable[[str], None] = lambda message: None) -> None:
        self.opts = opts
        self.store = store
        self.stats = SessionStats()
        self.setup = opts.setup()
        self.front = Front(opts, self.stats, store.log, notice)
        self.log = RoundLog(store, self.setup, keep_text=opts.keep_text, stats=self.stats,
                            observers=observers, notice=notice, on_stop=self._stop_shadow,
                            commit_every=opts.commit_every)
        self.proxy = MirrorProxy(proxy_config(opts), self)
        self.stop_event = asyncio.Event()

    @property
    def shadow_off(self) -> bool:
        return self.front.shadow_off

    def _stop_shadow(self) -> None:
        self.front.shadow_off = True

    # the proxy's hooks
    def on_request(self, path: str, api: str, body: dict[str, Any], raw: bytes,
                   ts: str) -> Mirrored | None:
        return self.front.on_request(path, api, body, raw, ts)

    def on_done(self, job: Mirrored) -> None:
        self.log.on_done(job)

    async def start(self) -> None:
        self.log.start()
        try:
            await self.proxy.start(self.opts.host, self.opts.port)
        except BaseException:
            await self.log.close()
            self.front.close()
            raise

    async def close(self) -> dict[str, Any]:
        """Graceful end: the proxy finishes clients and drains; every round committed;
        a ``mirror-stats`` event appended. Returns the figures of the session."""
        try:
            await self.proxy.close()
        finally:
            await self.log.close()
            self.front.close()
        figures = self.figures()
        with contextlib.suppress(StorageError, OSError):
            append_event(self.store.log, stats_event(self.setup, figures))
        return figures

    def figures(self) -> dict[str, Any]:
        return figures_of(self.proxy.stats, self.stats)

    @property
    def url(self) -> str:
        return f"http://{self.opts.host}:{self.proxy.port}"

    async def serve(self, ready: Callable[[str], None] | None = None,
                    tick: Callable[[dict[str, Any]], None] | None = None,
                    tick_every: float = 60.0) -> dict[str, Any]:
        """Run until SIGTERM/SIGINT (or ``stop_event``), then close gracefully."""
        return await serve(self, ready, tick, tick_every)


class Serving(Protocol):
    """What ``serve`` runs: a mirror in one process or two. ``start`` cleans up after
    itself when it fails; ``close`` is graceful and returns the session's figures."""

    stop_event: asyncio.Event

    @property
    def url(self) -> str: ...

    async def start(self) -> None: ...

    async def close(self) -> dict[str, Any]: ...

    def figures(self) -> dict[str, Any]: ...


async def serve(server: Serving, ready: Callable[[str], None] | None = None,
                tick: Callable[[dict[str, Any]], None] | None = None,
                tick_every: float = 60.0) -> dict[str, Any]:
    """The one serve sequence of both modes: start → ready → run until SIGTERM/SIGINT
    (or ``stop_event``) → close gracefully; returns the figures."""
    await server.start()
    # everything built so far lives as long as the mirror: out of the collector's sight, a
    # full collection under traffic walks only the requests' own objects (shorter pauses)
    gc.collect()
    gc.freeze()
    try:
        if ready is not None:
            ready(server.url)
        await run_until_signal(server.stop_event, None if tick is None else
                               (lambda: tick(server.figures())), tick_every)
    finally:
        figures = await server.close()
    return figures


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when installed (about twice aiohttp's throughput), else
    asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


class Outlets(msgspec.Struct):
    """How the session talks to its user (the CLI renders; the app decides)."""

    notice: Callable[[str], None]  # warnings, one line each
    alert: Callable[[str], None]  # a halt alert (loud)
    ready: Callable[[str], None] | None = None  # the URL clients use, once listening
    tick: Callable[[dict[str, Any]], None] | None = None  # figures now and then


def serve_mirror(cfg: Config, outlets: Outlets, *, single_process: bool = False,
                 tick_every: float = 60.0) -> dict[str, Any]:
    """``shadow-burnin mirror``: the whole session, from the config to the final figures.
    By default the shadow (v2, comparison, the log and its lock) runs in a second
    process (``app.mirror_split``); ``single_process`` keeps it in this one."""
    from shadow_burnin.app.burnin import api_key, halt_watch, liveness_watch

    opts = options_from(cfg, api_key(cfg.v1.api_key_env, "v1"),
                        api_key(cfg.v2.api_key_env, "v2"))
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        if not single_process:
            from shadow_burnin.app.mirror_split import SplitMirror

            split = SplitMirror(cfg, opts, notice=outlets.notice)
            return runner.run(serve(split, outlets.ready, outlets.tick, tick_every))
        store = Store(Path(cfg.paths.log), Path(cfg.paths.state), rotation_of(cfg))
        for message in store.open().warnings:
            outlets.notice(message)
        try:
            watch = halt_watch(cfg, store, outlets.notice, outlets.alert)
            live = liveness_watch(cfg, outlets.notice)

            async def single() -> dict[str, Any]:
                session = MirrorSession(opts, store,
                                        observers=[o for o in (watch, live) if o is not None],
                                        notice=outlets.notice)
                if live is not None:
                    live.start()
                try:
                    return await serve(session, outlets.ready, outlets.tick, tick_every)
                finally:
                    if live is not None:
                        await live.close()
                    if watch is not None:
                        await watch.drain()

            return runner.run(single())
        finally:
            store.close()


def proxy_config(opts: MirrorOptions) -> ProxyConfig:
    return ProxyConfig(v1=opts.v1, v2=opts.v2, max_queue=opts.max_queue,
                       shadow_concurrency=opts.shadow_concurrency,
                       shadow_timeout=opts.timeout, v1_timeout=opts.v1_timeout,
                       max_body=opts.max_body, max_reply_bytes=opts.max_reply_bytes,
                       grace=opts.grace)


def mirror_round(job: Mirrored, setup: str, *, keep_text: bool) -> dict[str, Any]:
    """The log record of a finished job (``round`` is numbered at commit)."""
    client = job.v1 or SideReply(text=None, error="bad-shape: no reply")
    v1 = job.v1_greedy if job.greedy and job.v1_greedy is not None else client
    v2 = job.v2 or SideReply(text=None, error="bad-shape: no reply")
    t1 = v1.text if v1.replied else None
    t2 = v2.text if v2.replied else None
    cmp = classify(t1, t2)
    bucket = cmp.bucket
    if job.cancelled and not job.greedy:
        bucket = "client-cancelled"
    elif job.reason is not None and t1 is not None and t2 is not None:
        bucket = "not-comparable"
    compared = bucket in ("exact", "prefix-only", "no-match")
    text = prompt_text(job.body, job.api)
    meta: dict[str, Any] = {"path": job.path, "stream": job.stream, "setup": setup}
    if job.reason is not None:
        meta["reason"] = job.reason
    if job.greedy:
        meta["forced_greedy"] = True
        meta["client"] = _side(client, keep_text=False, compact=True)
        if job.cancelled:
            meta["client_cancelled"] = True
    record = Round(
        round=0, ts=job.ts, prompt_id="m-" + digest(text)[:12], category=f"mirror-{job.api}",
        bucket=bucket, divergence_byte=cmp.divergence_byte if compared else None,
        prefix_match_chars=cmp.prefix_match_chars if compared else None,
        v1=SideReply(text=None), v2=SideReply(text=None), first="both", source="mirror",
    ).to_json()
    record["v1"] = _side(v1, keep_text=keep_text)
    record["v2"] = _side(v2, keep_text=keep_text)
    record["prompt_sha256"] = digest(text)
    record["prompt_chars"] = len(text)
    if bucket in ("prefix-only", "no-match") and t1 is not None and t2 is not None:
        record["context"] = divergence_context(t1, t2, cmp.prefix_match_chars or 0)
    if keep_text:
        record["request"] = job.body
    record["mirror"] = meta
    return record


def _side(reply: SideReply, *, keep_text: bool, compact: bool = False) -> dict[str, Any]:
    out = reply.to_json()
    out.pop("_tokens", None)
    text = reply.text
    if not keep_text:
        out["text"] = None
    out.update(text_summary(text))
    if compact:
        return {k: out[k] for k in ("status", "latency_ms", "error", "text_sha256",
                                    "text_chars")}
    return out


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="milliseconds")[:-6] + "Z"
