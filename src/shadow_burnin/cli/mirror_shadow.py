"""The shadow process of ``shadow-burnin mirror`` (see ``app.mirror_split``).

Started by the mirror with pipes on stdin/stdout, never by hand. It ignores SIGINT and
SIGTERM (a service manager signals the whole group; the mirror coordinates the end) and
ends once its stdin does: drains its queue within ``grace``, commits every round, reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from shadow_burnin.app.burnin import halt_watch
from shadow_burnin.app.mirror import RoundLog, SessionStats, proxy_config
from shadow_burnin.app.mirror_split import frame, read_frame
from shadow_burnin.cli.mirror import loop_factory
from shadow_burnin.errors import ShadowBurninError
from shadow_burnin.io.log.rotation import rotation_of
from shadow_burnin.io.log.store import Store
from shadow_burnin.io.proxy.mirror import ProxyStats, ShadowPool
from shadow_burnin.render.escape import term
from shadow_burnin.render.gates import halt_alert

STATS_EVERY = 5.0  # seconds between the figures sent to the mirror


async def _serve() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out = sys.stdout.buffer

    def send(obj: Any) -> None:
        out.write(frame(obj))
        out.flush()

    err = Console(stderr=True, soft_wrap=True)

    def say(message: str) -> None:
        err.print(term(message), markup=False, highlight=False)

    hello = await read_frame(reader)
    if not isinstance(hello, dict):
        return
    cfg, opts = hello["cfg"], hello["opts"]
    store = Store(Path(cfg.paths.log), Path(cfg.paths.state), rotation_of(cfg))
    try:
        for message in store.open().warnings:
            say(f"warning: {message}")
    except ShadowBurninError as exc:
        send(exc)
        return
    try:
        watch = halt_watch(cfg, store, lambda m: say(f"warning: {m}"),
                           lambda m: err.print(halt_alert(m, cfg.paths.log), soft_wrap=False))
        stats, pool_stats = SessionStats(), ProxyStats()
        log = RoundLog(store, opts.setup(), keep_text=opts.keep_text, stats=stats,
                       observers=[watch] if watch else [],
                       notice=lambda m: say(f"warning: {m}"))
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
        while (job := await read_frame(reader)) is not None:
            if log.shadow_off:  # a halt with action "stop": no more shadowing
                pool_stats.skipped += 1
                continue
            pool.offer(job)
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
        await pool.close(loop.time() + opts.grace)
        await log.close()
        if watch is not None:
            await watch.drain()
        send(figures("final"))
    finally:
        store.close()


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(_serve())


if __name__ == "__main__":
    main()
