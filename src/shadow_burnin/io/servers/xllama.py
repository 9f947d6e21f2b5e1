"""llama.cpp's C++ server through the prebuilt ``xllamacpp`` wheel, one process per server.

``xllamacpp.Server(params)`` serves llama.cpp's own HTTP server (``/health``,
``/v1/completions``, ``/v1/chat/completions``, ``/tokenize``, ``/props``, ``/completion``)
from threads of the calling process and has no stop method, so every server runs in its
own process: ``python -m shadow_burnin.io.servers.serve_xllama '<settings json>'`` builds
the ``CommonParams``, starts the server and waits for SIGTERM. :class:`LocalServer` gives
it a free loopback port, a parent-death signal, a log file and readiness via ``/health``.

:class:`XllamaSettings` holds the knobs that matter for numbers: threads, batch/ubatch,
flash attention, KV cache types, RoPE base/scale, context (and whether a full context
shifts out old tokens instead of stopping), the repeat-penalty default.
Different thread/batch settings put the same weights on different numeric paths (the
forensics tests use that); a wrong RoPE base breaks the model on purpose.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Literal

import msgspec

from shadow_burnin.io.servers.llama_build import CTX_SIZE
from shadow_burnin.io.servers.local import HOST, LocalServer

FlashAttn = Literal["auto", "on", "off"]
CACHE_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1")
ENTRY = "shadow_burnin.io.servers.serve_xllama"
WHEEL_HINT = "install the demo extra: pip install 'shadow-burnin[demo]' (wheel: xllamacpp)"


class XllamaSettings(msgspec.Struct, frozen=True):
    """What a llama.cpp server is told; the defaults are the demo's v1.

    ``cache_prompt`` is off: with prompt caching a prompt that shares a cached prefix is
    only partly evaluated, and its logprobs differ from a fresh evaluation. One slot, so
    the context is not split.
    """

    threads: int = 1
    threads_batch: int | None = None  # None: same as threads
    n_ctx: int = CTX_SIZE
    batch: int = 2048
    ubatch: int = 512
    flash_attn: FlashAttn = "off"
    cache_type_k: str = "f16"
    cache_type_v: str = "f16"
    rope_freq_base: float = 0.0  # 0: the model's own
    rope_freq_scale: float = 0.0  # 0: the model's own
    repeat_penalty: float = 1.0
    cache_prompt: bool = False
    ctx_shift: bool = False  # on a full context, drop old tokens instead of stopping
    swa_full: bool = False  # full-size cache for sliding-window attention layers
    warmup: bool = False
    alias: str | None = None  # the model id served (default: the file's stem)

    def __post_init__(self) -> None:
        for name in ("cache_type_k", "cache_type_v"):
            if getattr(self, name) not in CACHE_TYPES:
                raise ValueError(f"{name}: {getattr(self, name)!r} is not one of {CACHE_TYPES}")
        if self.flash_attn not in ("auto", "on", "off"):
            raise ValueError(f"flash_attn: {self.flash_attn!r} is not auto/on/off")
        if self.threads < 1 or self.batch < 1 or self.ubatch < 1 or self.n_ctx < 16:
            raise ValueError("threads, batch, ubatch must be ≥ 1 and n_ctx ≥ 16")

    def to_json(self, model: Path, port: int) -> str:
        return json.dumps({"model": str(model), "host": HOST, "port": port,
                           **msgspec.structs.asdict(self)})  # all scalars

    def label(self) -> str:
        """A short description for logs and reports."""
        parts = [f"{self.threads}t", f"batch {self.batch}/{self.ubatch}"]
        if self.flash_attn != "off":
            parts.append(f"fa {self.flash_attn}")
        if (self.cache_type_k, self.cache_type_v) != ("f16", "f16"):
            parts.append(f"kv {self.cache_type_k}/{self.cache_type_v}")
        if self.rope_freq_base:
            parts.append(f"rope base {self.rope_freq_base:g}")
        if self.rope_freq_scale:
            parts.append(f"rope scale {self.rope_freq_scale:g}")
        if self.repeat_penalty != 1.0:
            parts.append(f"repeat_penalty {self.repeat_penalty:g}")
        if self.n_ctx != CTX_SIZE:
            parts.append(f"n_ctx {self.n_ctx}{' (shift)' if self.ctx_shift else ''}")
        if self.swa_full:
            parts.append("swa full")
        return ", ".join(parts)


def common_params(config: dict[str, Any]) -> Any:
    """``xllamacpp.CommonParams`` for a decoded settings JSON (in the server process)."""
    import xllamacpp  # type: ignore[import-untyped]

    s = XllamaSettings(**{f.name: config[f.name] for f in msgspec.structs.fields(XllamaSettings)
                          if f.name in config})
    model = Path(config["model"])
    params = xllamacpp.CommonParams()
    params.model.path = str(model)
    params.model_alias = {s.alias or model.stem}
    params.hostnames = [config["host"]]
    params.port = int(config["port"])
    params.n_ctx = s.n_ctx
    params.n_parallel = 1
    params.n_batch = s.batch
    params.n_ubatch = s.ubatch
    params.cpuparams.n_threads = s.threads
    params.cpuparams_batch.n_threads = s.threads_batch or s.threads
    fa = xllamacpp.llama_flash_attn_type
    params.flash_attn_type = {"auto": fa.LLAMA_FLASH_ATTN_TYPE_AUTO,
                              "on": fa.LLAMA_FLASH_ATTN_TYPE_ENABLED,
                              "off": fa.LLAMA_FLASH_ATTN_TYPE_DISABLED}[s.flash_attn]
    params.cache_type_k = getattr(xllamacpp.ggml_type, f"GGML_TYPE_{s.cache_type_k.upper()}")
    params.cache_type_v = getattr(xllamacpp.ggml_type, f"GGML_TYPE_{s.cache_type_v.upper()}")
    params.rope_freq_base = s.rope_freq_base
    params.rope_freq_scale = s.rope_freq_scale
    params.sampling.penalty_repeat = s.repeat_penalty
    params.ctx_shift = s.ctx_shift
    params.swa_full = s.swa_full
    params.cache_prompt = s.cache_prompt
    params.cache_ram_mib = 0
    params.warmup = s.warmup
    return params


def xllama_server(
    model: Path,
    settings: XllamaSettings | None = None,
    *,
    name: str = "xllamacpp",
    port: int | None = None,
    log_path: Path | None = None,
) -> LocalServer:
    """A llama.cpp C++ server (xllamacpp) in its own process; not yet started."""
    chosen = settings or XllamaSettings()

    def build(port: int) -> list[str]:
        return [sys.executable, "-m", ENTRY, chosen.to_json(model, port)]

    server = LocalServer(name, build, model, port=port, log_path=log_path, kind="xllamacpp",
                         ready_path="/health")
    server.settings = chosen  # type: ignore[attr-defined]
    return server
