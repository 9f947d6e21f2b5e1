"""A real llama.cpp server in its own process via xllamacpp (no stop method in-process,
so: a subprocess ended with SIGTERM). ``python -m tests.e2e.xllama MODEL PORT [N_BATCH]``
prints READY once the model is loaded."""

from __future__ import annotations

import signal
import sys
import threading


def main() -> None:
    import xllamacpp

    p = xllamacpp.CommonParams()
    p.model.path = sys.argv[1]
    p.hostnames = ["127.0.0.1"]
    p.port = int(sys.argv[2])
    p.n_ctx = 1024
    p.n_parallel = 1
    p.cpuparams.n_threads = 1
    p.cpuparams_batch.n_threads = 1
    if len(sys.argv) > 3:  # another batch size: the same weights, other float sums
        p.n_batch = p.n_ubatch = int(sys.argv[3])
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    server = xllamacpp.Server(p)  # returns once the model is loaded
    print("READY", flush=True)
    stop.wait()
    del server


if __name__ == "__main__":
    main()
