"""Process entry point: mistral.rs behind the OpenAI-compatible front until SIGTERM/SIGINT.

``python -m shadow_burnin.io.servers.serve_mistral '{"model", "port", "alias",
"tokenizer_json", "bos", "space_prefix"}'`` (the last two optional: the broken variants of
``MistralSettings``) — loads the engine first, then listens (so ``/health`` answering means
ready).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from shadow_burnin.io.servers.local import HOST
from shadow_burnin.io.servers.procutil import STOP_SIGNALS, entry_preamble


def main(argv: list[str]) -> int:
    started = entry_preamble(argv, "shadow_burnin.io.servers.serve_mistral", "mistralrs")
    if isinstance(started, int):
        return started
    config, _mistralrs = started
    model = Path(config["model"])
    from aiohttp import web

    from shadow_burnin.io.servers.gguf_tokenizer import ensure_tokenizer_json
    from shadow_burnin.io.servers.mistral_front import Engine, Front, raw_template_path

    tok = Path(config["tokenizer_json"]) if config.get("tokenizer_json") else None
    space_prefix = config.get("space_prefix")
    bos = bool(config.get("bos", True))
    if tok is None:
        print("tokenizer.json from the GGUF's metadata (built once, cached)…", flush=True)
        tok = ensure_tokenizer_json(model, space_prefix=space_prefix,
                                    bos=None if bos else False)
    print(f"mistral.rs: loading {model} (tokenizer {tok}{'' if bos else ', no BOS'})",
          flush=True)
    try:
        engine = Engine(model, tok, raw_template_path(bos))
    except Exception as exc:
        print(f"mistralrs.Runner failed: {exc}", file=sys.stderr, flush=True)
        return 5

    async def serve() -> int:
        runner = web.AppRunner(Front(engine, config["alias"]).app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, HOST, int(config["port"]))
        await site.start()
        print(f"serving on {HOST}:{config['port']}", flush=True)
        loop = asyncio.get_running_loop()
        stopped: asyncio.Future[int] = loop.create_future()
        def note(signum: int) -> None:
            if not stopped.done():
                stopped.set_result(signum)

        for sig in STOP_SIGNALS:
            loop.add_signal_handler(sig, note, int(sig))
        signum = await stopped
        print(f"stopping on signal {signum}", flush=True)
        await runner.cleanup()
        return 0

    code = asyncio.run(serve())
    sys.stdout.flush()
    os._exit(code)  # the engine's threads are not joinable


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
