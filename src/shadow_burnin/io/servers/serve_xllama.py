"""Process entry point: one llama.cpp server (xllamacpp) until SIGTERM/SIGINT.

``python -m shadow_burnin.io.servers.serve_xllama '<XllamaSettings JSON + model/host/port>'``
"""

from __future__ import annotations

import os
import sys

from shadow_burnin.io.servers.procutil import entry_preamble, wait_stop


def main(argv: list[str]) -> int:
    started = entry_preamble(argv, "shadow_burnin.io.servers.serve_xllama", "xllamacpp")
    if isinstance(started, int):
        return started
    config, xllamacpp = started
    from shadow_burnin.io.servers.xllama import common_params

    params = common_params(config)
    print(f"xllamacpp {xllamacpp.__version__}: loading {config['model']} on "
          f"{config['host']}:{config['port']}", flush=True)
    try:
        server = xllamacpp.Server(params)
    except Exception as exc:
        print(f"xllamacpp.Server failed: {exc}", file=sys.stderr, flush=True)
        return 5
    print("serving", flush=True)
    signum = wait_stop()
    print(f"stopping on signal {signum}", flush=True)
    del server
    os._exit(0)  # the server's threads are not joinable; end the process at once


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
