"""``shadow-burnin mirror`` in two processes: the clients' side and the shadow's side.

This process runs the proxy (clients, v1, the capture, the comparability rules, keeping
the bytes of v1's replies); a child process (``python -m shadow_burnin.cli.mirror_shadow``,
whose body is :func:`shadow_process` here) runs the shadow: the bounded queue, the copies
to v2, the reading of both replies, the comparison and the log, at a lower priority
(:func:`shadow_scheduling`: ``SCHED_IDLE`` by default). The two share nothing but a
pipe: the client exchanges finished in one turn of the event loop go as one frame (pickled
:class:`~shadow_burnin.io.proxy.mirror.Mirrored` jobs, each one tuple), one write that
never waits; when more than ``PIPE_LIMIT`` bytes are still unread by the child, a job is
dropped and counted, as a full queue drops it. So the shadow's work (an HTTP exchange
with v2, two reply reads, a round, the commit) never runs on the event loop that serves
the clients, and on a machine with two cores or more it runs on another.

Protocol: frames of a 4-byte big-endian length and a pickle (between two processes of
this program only). To the child: ``{"cfg", "opts"}``, then lists of jobs (those
finished in one turn of the event loop: one frame, one write), then end of file. From
the child: ``{"kind": "ready"}`` (or the ``ShadowBurninError`` that stopped it, e.g. the
log is locked), ``{"kind": "stats", …}`` now and then, ``{"kind": "final", …}`` once it
has drained its queue (within ``grace``) and committed every round.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import signal
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from msgspec.structs import fields

from shadow_burnin.app.mirror import (
    Front,
    MirrorOptions,
    RoundLog,
    SessionStats,
    figures_of,
    loop_factory,
    proxy_config,
    serve,
    stats_event,
)
from shadow_burnin.config import Config
from shadow_burnin.config_mirror import MirrorConfig
from shadow_burnin.errors import ShadowBurninError, StorageError
from shadow_burnin.io.log.events import append_event
from shadow_burnin.io.log.rotation import rotation_of
from shadow_burnin.io.log.store import Store
from shadow_burnin.io.proxy.mirror import Mirrored, MirrorProxy, ProxyStats, ShadowPool

_HEAD = struct.Struct(">I")
PIPE_LIMIT = 64 * 1024 * 1024  # bytes of jobs the child has not read yet, at most


class ShadowProcessError(ShadowBurninError):
    """The shadow process could not start or ended before its final figures."""


def frame(obj: Any) -> bytes:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEAD.pack(len(data)) + data


async def read_frame(reader: asyncio.StreamReader) -> Any | None:
    """The next frame's object; None at the end of the stream."""
    try:
        head = await reader.readexactly(_HEAD.size)
        data = await reader.readexactly(_HEAD.unpack(head)[0])
    except asyncio.IncompleteReadError:
        return None
    return pickle.loads(data)


def add_stats(a: ProxyStats, b: dict[str, int]) -> ProxyStats:
    out = ProxyStats()
    for f in fields(ProxyStats):
        setattr(out, f.name, getattr(a, f.name) + int(b.get(f.name, 0)))
    return out


class SplitMirror:
    """The clients' side; it starts and feeds the shadow process."""

    def __init__(self, cfg: Config, opts: MirrorOptions,
                 notice: Any = lambda message: None) -> None:
        self.cfg = cfg
        self.opts = opts
        self.notice = notice
        self.stats = SessionStats()
        self.setup = opts.setup()
        self.front = Front(opts, self.stats, Path(cfg.paths.log), notice)
        self.proxy = MirrorProxy(proxy_config(opts), self, sink=self._send)
        self.stop_event = asyncio.Event()
        self._child: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._latest: dict[str, Any] = {}
        self._final: dict[str, Any] | None = None
        self._broken = False
        self._batch: list[Mirrored] = []  # jobs for the next frame
        self._flush_soon = False

    # the proxy's hooks
    def on_request(self, path: str, api: str, body: dict[str, Any], raw: bytes,
                   ts: str) -> Mirrored | None:
        return self.front.on_request(path, api, body, raw, ts)

    def on_done(self, job: Mirrored) -> None:  # pragma: no cover - jobs go to the sink
        raise AssertionError("the split mirror sends jobs to its shadow process")

    def _send(self, job: Mirrored) -> None:
        """Queue the job for the shadow process; never waits. The jobs finished in one
        turn of the event loop go in one frame, one write (``_flush``)."""
        if not self._writable():
            self.proxy.stats.dropped_full += 1
            return
        self._batch.append(job)
        if not self._flush_soon:
            self._flush_soon = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _writable(self) -> bool:
        child = self._child
        stdin = None if child is None else child.stdin
        return not (stdin is None or self._broken or stdin.is_closing() or
                    stdin.transport.get_write_buffer_size() > PIPE_LIMIT)

    def _flush(self) -> None:
        self._flush_soon = False
        batch, self._batch = self._batch, []
        if not batch:
            return
        if not self._writable():
            self.proxy.stats.dropped_full += len(batch)
            return
        assert self._child is not None and self._child.stdin is not None
        self._child.stdin.write(frame(batch))

    async def _start_child(self) -> None:
        env = dict(os.environ)
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "shadow_burnin.cli.mirror_shadow",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env)
        self._child = child
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write(frame({"cfg": self.cfg, "opts": self.opts}))
        await child.stdin.drain()
        hello = await read_frame(child.stdout)
        if isinstance(hello, ShadowBurninError):
            await child.wait()
            raise hello
        if not isinstance(hello, dict) or hello.get("kind") != "ready":
            await child.wait()
            raise ShadowProcessError(f"the shadow process did not start (exit "
                                     f"{child.returncode})")
        self._reader = asyncio.create_task(self._read_child(child.stdout))

    async def _read_child(self, stdout: asyncio.StreamReader) -> None:
        while (message := await read_frame(stdout)) is not None:
            if isinstance(message, dict):
                if message.get("kind") == "final":
                    self._final = message
                self._latest = message
        self._broken = True

    def figures(self) -> dict[str, Any]:
        child = self._final or self._latest
        stats = SessionStats(rounds=child.get("rounds", 0),
                             log_dropped=child.get("log_dropped", 0),
                             captured=self.stats.captured,
                             capture_skipped=self.stats.capture_skipped,
                             buckets=dict(child.get("buckets", {})))
        return figures_of(add_stats(self.proxy.stats, child.get("pool", {})), stats)

    @property
    def url(self) -> str:
        return f"http://{self.opts.host}:{self.proxy.port}"

    async def start(self) -> None:
        """Start the shadow process, then listen; on failure, nothing is left running."""
        try:
            await self._start_child()
        except BaseException:
            self.front.close()
            raise
        try:
            await self.proxy.start(self.opts.host, self.opts.port)
        except BaseException:
            await self._shut()
            raise

    async def serve(self, ready: Any = None, tick: Any = None,
                    tick_every: float = 60.0) -> dict[str, Any]:
        """Start the shadow process, serve until SIGTERM/SIGINT, then close gracefully.
        Returns the figures of both processes."""
        return await serve(self, ready, tick, tick_every)

    async def _shut(self) -> None:
        try:
            await self.proxy.close()
        finally:
            self.front.close()
            await self._end_child()

    async def close(self) -> dict[str, Any]:
        """Clients finished and every job sent; the child drains, commits and reports."""
        await self._shut()
        if self._final is None:
            raise ShadowProcessError(
                "the shadow process ended before its final figures (exit "
                f"{None if self._child is None else self._child.returncode}); the rounds it "
                "committed are in the log")
        figures = self.figures()
        with contextlib.suppress(StorageError, OSError):
            append_event(Path(self.cfg.paths.log), stats_event(self.setup, figures))
        return figures

    async def _end_child(self) -> None:
        child = self._child
        if child is None:
            return
        self._flush()
        if child.stdin is not None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                await child.stdin.drain()
            child.stdin.close()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                await child.stdin.wait_closed()
        try:
            async with asyncio.timeout(self.opts.grace + 60):
                if self._reader is not None:
                    await self._reader
                await child.wait()
        except TimeoutError:
            child.kill()
            await child.wait()


# -- the shadow process (``python -m shadow_burnin.cli.mirror_shadow``) --------------------

STATS_EVERY = 5.0  # seconds between the figures sent to the mirror


def shadow_scheduling(m: MirrorConfig) -> None:
    """Put every thread of this (the shadow) process under ``[mirror] shadow_sched``:
    ``idle`` is ``SCHED_IDLE`` — the kernel runs it only when nothing else of its
    scheduling group (the mirror's cgroup; under ``kernel.sched_autogroup_enabled`` its
    session, which the mirror and this process share) wants that CPU, and a waking client
    process preempts it at once, whatever the shadow is doing in user space; against
    other groups the group competes as one. ``nice`` is the normal policy ``shadow_nice``
    steps nicer than the mirror. Threads started later inherit it. Neither needs a privilege; a
    kernel that refuses (no ``SCHED_IDLE``) leaves the shadow at the normal policy."""
    tids = [int(t) for t in os.listdir("/proc/self/task")] if os.path.isdir(
        "/proc/self/task") else [0]
    for tid in tids:
        with contextlib.suppress(OSError, AttributeError):
            if m.shadow_sched == "idle":
                os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
            else:
                os.setpriority(os.PRIO_PROCESS, tid,
                               min(19, os.getpriority(os.PRIO_PROCESS, tid) + m.shadow_nice))


async def shadow_process(notice: Callable[[str], None],
                         alert: Callable[[str, str], None]) -> None:
    """The shadow's side: read the hello and the jobs on stdin, send each to v2, compare,
    log; report on stdout (``alert(message, log)``: a halt raised on that log). Ends
    once stdin does: drains within ``grace``, commits every round, sends its final
    figures."""
    from shadow_burnin.app.burnin import halt_watch, liveness_watch

    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out = sys.stdout.buffer

    def send(obj: Any) -> None:
        out.write(frame(obj))
        out.flush()

    hello = await read_frame(reader)
    if not isinstance(hello, dict):
        return
    cfg, opts = hello["cfg"], hello["opts"]
    shadow_scheduling(cfg.mirror)  # before any thread of the store or the pool starts
    store = Store(Path(cfg.paths.log), Path(cfg.paths.state), rotation_of(cfg))
    try:
        for message in store.open().warnings:
            notice(message)
    except ShadowBurninError as exc:
        send(exc)
        return
    try:
        watch = halt_watch(cfg, store, notice, lambda m: alert(m, str(cfg.paths.log)))
        live = liveness_watch(cfg, notice)  # stall / unreachable spikes, as in ``run``
        stats, pool_stats = SessionStats(), ProxyStats()
        log = RoundLog(store, opts.setup(), keep_text=opts.keep_text, stats=stats,
                       observers=[o for o in (watch, live) if o is not None], notice=notice,
                       commit_every=opts.commit_every)
        if live is not None:
            live.start()
        pool = ShadowPool(proxy_config(opts), log.on_done, pool_stats)
        log.start()
        pool.start()
        send({"kind": "ready"})

        def figures(kind: str) -> dict[str, Any]:
            return {"kind": kind, "pool": pool_stats.to_json(), "rounds": stats.rounds,
                    "log_dropped": stats.log_dropped, "buckets": dict(stats.buckets)}

        async def report() -> None:
            while True:
                await asyncio.sleep(STATS_EVERY)
                send(figures("stats"))

        reporter = asyncio.create_task(report())
        while (jobs := await read_frame(reader)) is not None:
            for job in jobs:
                if log.shadow_off:  # a halt with action "stop": no more shadowing
                    pool_stats.skipped += 1
                    continue
                pool.offer(job)
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
        await pool.close(loop.time() + opts.grace)
        await log.close()
        if live is not None:
            await live.close()
        if watch is not None:
            await watch.drain()
        send(figures("final"))
    finally:
        store.close()


def run_shadow_process(notice: Callable[[str], None],
                       alert: Callable[[str, str], None]) -> None:
    """The shadow process's main: it ignores SIGINT and SIGTERM (a service manager signals
    the whole group; the mirror coordinates the end)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(shadow_process(notice, alert))
