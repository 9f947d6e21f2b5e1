"""``shadow-burnin mirror`` in two processes: the clients' side and the shadow's side.

This process runs the proxy (clients, v1, the capture, the comparability rules, the
reading of v1's replies); a child process (``python -m shadow_burnin.cli.mirror_shadow``)
runs the shadow: the bounded queue, the copies to v2, the comparison and the log. The two
share nothing but a pipe: each finished client exchange is one frame (a pickled
:class:`~shadow_burnin.io.proxy.mirror.Mirrored`) written without waiting; when more
than ``PIPE_LIMIT`` bytes are still unread by the child, the job is dropped and counted,
as a full queue drops it. So the shadow's work (an HTTP exchange with v2, two parses, a
round, the commit) never runs on the event loop that serves the clients, and on a
machine with two cores or more it runs on another.

Protocol: frames of a 4-byte big-endian length and a pickle (between two processes of
this program only). To the child: ``{"cfg", "opts"}``, then jobs, then end of file. From
the child: ``{"kind": "ready"}`` (or the ``ShadowBurninError`` that stopped it, e.g. the
log is locked), ``{"kind": "stats", …}`` now and then, ``{"kind": "final", …}`` once it
has drained its queue (within ``grace``) and committed every round.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pickle
import struct
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

from shadow_burnin.app.mirror import (
    Front,
    MirrorOptions,
    SessionStats,
    figures_of,
    proxy_config,
    run_until_signal,
    stats_event,
)
from shadow_burnin.config import Config
from shadow_burnin.errors import ShadowBurninError, StorageError
from shadow_burnin.io.log.events import append_event
from shadow_burnin.io.proxy.mirror import Mirrored, MirrorProxy, ProxyStats

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

    # the proxy's hooks
    def on_request(self, path: str, api: str, body: dict[str, Any], raw: bytes,
                   ts: str) -> Mirrored | None:
        return self.front.on_request(path, api, body, raw, ts)

    def on_done(self, job: Mirrored) -> None:  # pragma: no cover - jobs go to the sink
        raise AssertionError("the split mirror sends jobs to its shadow process")

    def _send(self, job: Mirrored) -> None:
        child = self._child
        stdin = None if child is None else child.stdin
        if stdin is None or self._broken or stdin.is_closing() or \
                stdin.transport.get_write_buffer_size() > PIPE_LIMIT:
            self.proxy.stats.dropped_full += 1
            return
        stdin.write(frame(job))

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

    async def serve(self, ready: Any = None, tick: Any = None,
                    tick_every: float = 60.0) -> dict[str, Any]:
        """Start the shadow process, serve until SIGTERM/SIGINT, then close gracefully.
        Returns the figures of both processes."""
        await self._start_child()
        try:
            await self.proxy.start(self.opts.host, self.opts.port)
            if ready is not None:
                ready(f"http://{self.opts.host}:{self.proxy.port}")
            await run_until_signal(self.stop_event, None if tick is None else
                                   (lambda: tick(self.figures())), tick_every)
        finally:
            figures = await self.close()
        return figures

    async def close(self) -> dict[str, Any]:
        """Clients finished and every job sent; the child drains, commits and reports."""
        try:
            await self.proxy.close()
        finally:
            self.front.close()
            await self._end_child()
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
