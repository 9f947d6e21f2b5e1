"""Process entry point: one llama.cpp server (xllamacpp) until SIGTERM/SIGINT.

``python -m shadow_burnin.io.servers.serve_xllama '<XllamaSettings JSON + model/host/port>'``
"""

from __future__ import annotations

import json
import os
import sys

from shadow_burnin.io.servers.procutil import die_on_stop_signals, die_with_parent, wait_stop


def main(argv: list[str]) -> int:
    die_with_parent()
    die_on_stop_signals()
    if len(argv) != 1:
        print("usage: python -m shadow_burnin.io.servers.serve_xllama '<settings json>'",
              file=sys.stderr)
        return 2
    config = json.loads(argv[0])
    if not os.path.isfile(config["model"]):
        print(f"model file not found: {config['model']}", file=sys.stderr, flush=True)
        return 3
    try:
        import xllamacpp  # type: ignore[import-untyped]
    except ImportError as exc:
        print(f"cannot import xllamacpp ({exc}); install the demo extra", file=sys.stderr)
        return 4
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
