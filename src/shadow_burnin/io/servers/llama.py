"""Start and stop real local llama.cpp servers (for ``demo`` and the e2e tests).

v1 is llama.cpp's C++ ``llama-server``, v2 is ``llama-cpp-python``'s server, both on the
same gguf, context size and a single slot. Each process runs in its own process group
(``stop`` takes its children too); an ``atexit`` hook and a parent-death signal make sure
none outlives us.  ``with DemoPair(log_dir) as pair: pair.v1.url, pair.v2.url``
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from shadow_burnin.io.servers.llama_build import (
    CTX_SIZE,
    cache_dir,
    data_dir,
    ensure_llama_server,
    ensure_model,
    llama_cpp_python_argv,
    llama_server_argv,
    server_env,
)
from shadow_burnin.io.servers.local import HOST, LocalServer, ServerPair, free_port

__all__ = [
    "CTX_SIZE", "DemoPair", "LocalServer", "cache_dir", "data_dir", "demo_pair",
    "ensure_llama_server", "ensure_model", "free_port", "llama_cpp_python_server",
    "llama_server_cpp",
]


# ---------------------------------------------------------------------- factories


def llama_server_cpp(
    model: Path,
    *,
    threads: int = 1,
    ctx_size: int = CTX_SIZE,
    name: str = "llama-server",
    port: int | None = None,
    log_path: Path | None = None,
    binary: Path | None = None,
    extra_args: Sequence[str] = (),
) -> LocalServer:
    """llama.cpp's C++ server; flags (and why) in :func:`llama_server_argv`."""
    exe = binary or ensure_llama_server()

    def build(port: int) -> list[str]:
        return llama_server_argv(exe, model, HOST, port, threads=threads, ctx_size=ctx_size)

    return LocalServer(name, build, model, port=port, log_path=log_path,
                       extra_args=extra_args, env=server_env(exe), kind="llama-server")


def llama_cpp_python_server(
    model: Path,
    *,
    threads: int = 2,
    batch: int = 1,
    ctx_size: int = CTX_SIZE,
    name: str = "llama-cpp-python",
    port: int | None = None,
    log_path: Path | None = None,
    extra_args: Sequence[str] = (),
) -> LocalServer:
    """llama-cpp-python's OpenAI-compatible server; see :func:`llama_cpp_python_argv`."""

    def build(port: int) -> list[str]:
        return llama_cpp_python_argv(model, HOST, port, threads=threads, batch=batch,
                                     ctx_size=ctx_size)

    return LocalServer(name, build, model, port=port, log_path=log_path,
                       extra_args=extra_args, kind="llama-cpp-python")


def demo_pair(
    log_dir: Path, progress: Callable[[str], None] | None = None
) -> tuple[LocalServer, LocalServer]:
    """(v1, v2): C++ llama-server and llama-cpp-python on the same gguf; not yet started.

    Builds the cached llama-server the first time (about 8 min; ``progress`` hears it).
    """
    model = ensure_model()
    exe = ensure_llama_server(progress)
    v1 = llama_server_cpp(model, name="v1", binary=exe, log_path=log_dir / "v1-llama-server.log")
    v2 = llama_cpp_python_server(model, name="v2", log_path=log_dir / "v2-llama-cpp-python.log")
    return v1, v2


class DemoPair(ServerPair):
    """The compiled pair (llama-server vs llama-cpp-python), started and stopped together."""

    def __init__(self, log_dir: Path, progress: Callable[[str], None] | None = None) -> None:
        self.log_dir = log_dir
        v1, v2 = demo_pair(log_dir, progress)
        super().__init__(v1, v2, progress)
