"""One validated configuration object: TOML file + command-line flags.

Sections ``[v1]``, ``[v2]``, ``[request]`` (with ``[request.extra]``), ``[run]`` and
``[paths]``. Flags override the file. Unknown keys and wrong types are errors that name
the file and the key (``ConfigError``, exit 2).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import msgspec
import orjson
from msgspec.structs import replace

from shadow_burnin import config_cutover
from shadow_burnin.config_cutover import CutoverConfig
from shadow_burnin.config_mirror import MIRROR_SCHEMA, MirrorConfig, build_mirror
from shadow_burnin.config_sections import (
    AlertsConfig,
    GatesConfig,
    HaltConfig,
    PplConfig,
    build_sections,
)
from shadow_burnin.core import limits
from shadow_burnin.core.structs import deep_asdict
from shadow_burnin.core.verdict import Thresholds
from shadow_burnin.errors import ConfigError
from shadow_burnin.inputs import CONFIG_MAX_BYTES, read_input
from shadow_burnin.io.log.sidecars import default_ppl, default_state
from shadow_burnin.values import check_env_name, check_url, in_bounds, parse_duration, positive

DEFAULT_V1 = "http://127.0.0.1:8080"
DEFAULT_V2 = "http://127.0.0.1:8180"


def data_dir() -> Path:
    """Where logs, state, models and server logs live by default (the one definition)."""
    import platformdirs  # 5-10 ms of imports (tempfile, shutil): only when a default is used

    return Path(platformdirs.user_data_dir("shadow-burnin"))


class SideConfig(msgspec.Struct, frozen=True):
    url: str
    model: str | None = None
    api_key_env: str | None = None


class RequestConfig(msgspec.Struct, frozen=True):
    api: str = "chat"
    max_tokens: int = 64
    stream: bool = True
    timeout: float = 120.0
    logprobs: int = 0
    max_reply_bytes: int = 4 * 1024 * 1024
    extra: dict[str, Any] = msgspec.field(default_factory=dict)


class RunConfig(msgspec.Struct, frozen=True):
    interval: float = 2.5
    rounds: int | None = None
    duration: float | None = None
    concurrent: bool = False
    concurrency: int = 1
    seed: int | None = None
    prompts: str | None = None
    insecure: bool = False
    rotate: str | None = None  # "1GB", "daily": close the live log into segments


class PathsConfig(msgspec.Struct, frozen=True):
    log: str
    state: str


_THRESHOLDS = Thresholds()  # the verdict thresholds' defaults, defined in core


class ForensicsConfig(msgspec.Struct, frozen=True):
    """``[forensics]``: divergence forensics of ``run`` (not part of the setup
    fingerprint: changing them does not start a new burn-in)."""

    logprobs: int = 5
    refire: int = 1
    aa_every: int = 10
    v1b: str | None = None
    tau_tie: float = _THRESHOLDS.tau_tie
    tau_drift: float = _THRESHOLDS.tau_drift
    tau_regress: float = _THRESHOLDS.tau_regress
    calibrate: bool = False
    max_slowdown: float = 3.0


class Config(msgspec.Struct, frozen=True):
    v1: SideConfig
    v2: SideConfig
    request: RequestConfig
    run: RunConfig
    paths: PathsConfig
    source: str | None = None
    forensics: ForensicsConfig = msgspec.field(default_factory=ForensicsConfig)
    gates: GatesConfig = msgspec.field(default_factory=GatesConfig)
    halt: HaltConfig = msgspec.field(default_factory=HaltConfig)
    alerts: AlertsConfig = msgspec.field(default_factory=AlertsConfig)
    ppl: PplConfig = msgspec.field(default_factory=PplConfig)
    cutover: CutoverConfig = msgspec.field(default_factory=CutoverConfig)
    mirror: MirrorConfig = msgspec.field(default_factory=MirrorConfig)

    def to_dict(self) -> dict[str, Any]:
        out = deep_asdict(self)  # nested sections as dicts, like dataclasses.asdict
        out.pop("source")
        gates = out["gates"]
        for spec in gates.pop("specs"):
            gates[spec.pop("name")] = spec
        return _drop_none(out)

    def ppl_log(self) -> str:
        """The ``ppl`` JSONL beside the log: ``x.jsonl`` → ``x.ppl.jsonl``."""
        if self.ppl.log:
            return self.ppl.log
        return str(default_ppl(Path(self.paths.log)))

    def fingerprint_fields(self, prompts_digest: str) -> dict[str, Any]:
        """What must not change under a running burn-in (secrets excluded)."""
        req = deep_asdict(self.request)
        req.pop("timeout")
        req.pop("max_reply_bytes")
        return {
            "v1": {"url": self.v1.url, "model": self.v1.model or "auto"},
            "v2": {"url": self.v2.url, "model": self.v2.model or "auto"},
            "request": req,
            "prompts": prompts_digest,
        }


def fingerprint(fields: dict[str, Any]) -> str:
    import hashlib  # here: loading OpenSSL costs reading commands ~2 ms they never use

    raw = orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(raw).hexdigest()[:16]


# -- schema ---------------------------------------------------------------------------
# key -> (accepted python types, human type name)
_INT = ((int,), "an integer")
_NUM = ((int, float), "a number")
_STR = ((str,), "a string")
_BOOL = ((bool,), "true or false")
SCHEMA: dict[str, dict[str, tuple[tuple[type, ...], str]]] = {
    "v1": {"url": _STR, "model": _STR, "api_key_env": _STR},
    "v2": {"url": _STR, "model": _STR, "api_key_env": _STR},
    "request": {"api": _STR, "max_tokens": _INT, "stream": _BOOL, "timeout": _NUM,
                "logprobs": _INT, "max_reply_bytes": _INT, "extra": ((dict,), "a table")},
    "run": {"interval": _NUM, "rounds": _INT, "duration": ((int, float, str), "a duration"),
            "concurrent": _BOOL, "concurrency": _INT, "seed": _INT, "prompts": _STR,
            "insecure": _BOOL, "rotate": _STR},
    "paths": {"log": _STR, "state": _STR},
    "forensics": {"logprobs": _INT, "refire": _INT, "aa_every": _INT, "v1b": _STR,
                  "tau_tie": _NUM, "tau_drift": _NUM, "tau_regress": _NUM,
                  "calibrate": _BOOL, "max_slowdown": _NUM},
    "gates": {"statistical": _BOOL, "bootstrap": _INT, "seed": _INT, "scope": _STR,
              "*": ((dict,), "a gate table ([gates.NAME])")},
    "halt": {"enabled": _BOOL, "window": ((int, float, str), "a duration"),
             "min_rounds": _INT, "threshold": _NUM, "action": _STR, "on_halt": _STR,
             "webhook": _STR, "webhook_timeout": _NUM, "worst": _INT, "on": _STR},
    "alerts": {"enabled": _BOOL, "stall": ((int, float, str), "a duration"),
               "spike_window": _INT, "spike_rounds": _INT},
    "ppl": {"text": _STR, "window": _INT, "top_k": _INT, "v1_method": _STR,
            "v2_method": _STR, "v1_endpoint": _STR, "v2_endpoint": _STR,
            "max_windows": _INT, "timeout": _NUM, "log": _STR},
    "cutover": config_cutover.SCHEMA,
    "mirror": MIRROR_SCHEMA,
}


def read_toml(path: str | Path) -> dict[str, Any]:
    import tomllib  # only when there is a file to read (2 ms of imports otherwise)

    p = Path(path)
    raw = read_input(p, ConfigError, "config", max_bytes=CONFIG_MAX_BYTES)
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(p, "not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(p, f"invalid TOML: {exc}") from None


def load(path: str | Path | None, overrides: dict[str, dict[str, Any]] | None = None) -> Config:
    """Read the TOML file (if any), apply flag overrides, validate, return a Config."""
    raw: dict[str, Any] = read_toml(path) if path is not None else {}
    src = str(path) if path is not None else None
    where = src or "command line"
    merged: dict[str, dict[str, Any]] = {}
    for section, values in raw.items():
        if section not in SCHEMA:
            raise ConfigError(src, f"unknown section [{section}]")
        if not isinstance(values, dict):
            raise ConfigError(src, f"[{section}] must be a table")
        merged[section] = dict(values)
    for section, values in (overrides or {}).items():
        for key, value in values.items():
            if value is not None:
                merged.setdefault(section, {})[key] = value
    for section, values in merged.items():
        for key, value in values.items():
            if key not in SCHEMA[section] and "*" not in SCHEMA[section]:
                raise ConfigError(src, f"unknown key {section}.{key}")
            types, name = SCHEMA[section].get(key) or SCHEMA[section]["*"]
            if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
                raise ConfigError(src, f"{section}.{key} must be {name}, got {value!r}")
    try:
        return replace(_build(merged, src), forensics=_forensics(merged.get("forensics", {})),
                       cutover=config_cutover.build(merged.get("cutover", {})),
                       mirror=build_mirror(merged.get("mirror", {})))
    except ValueError as exc:
        raise ConfigError(src if src else None, f"{exc}" if src else f"{where}: {exc}") from None


def _build(m: dict[str, dict[str, Any]], src: str | None) -> Config:
    v1 = SideConfig(url=m.get("v1", {}).get("url", DEFAULT_V1), model=m.get("v1", {}).get("model"),
                    api_key_env=m.get("v1", {}).get("api_key_env"))
    v2 = SideConfig(url=m.get("v2", {}).get("url", DEFAULT_V2), model=m.get("v2", {}).get("model"),
                    api_key_env=m.get("v2", {}).get("api_key_env"))
    for side, sc in (("v1", v1), ("v2", v2)):
        check_url(f"{side}.url", sc.url)
        if sc.api_key_env is not None:
            # never echo it: a key pasted here by mistake must not reach a terminal or log
            check_env_name(f"{side}.api_key_env", sc.api_key_env)
    r = m.get("request", {})
    request = RequestConfig(**r)
    if request.api not in ("chat", "completions", "native"):
        raise ValueError("request.api must be 'chat', 'completions' or 'native', "
                         f"got {request.api!r}")
    in_bounds("request.max_tokens", request.max_tokens, limits.MAX_TOKENS)
    positive("request.timeout", request.timeout)
    in_bounds("request.timeout", request.timeout, limits.TIMEOUT_S)
    in_bounds("request.max_reply_bytes", request.max_reply_bytes, limits.MAX_REPLY_BYTES)
    in_bounds("request.logprobs", request.logprobs, limits.LOGPROBS)
    run_raw = dict(m.get("run", {}))
    if "duration" in run_raw:
        run_raw["duration"] = parse_duration(run_raw["duration"], "run.duration")
    run = RunConfig(**run_raw)
    in_bounds("run.interval", run.interval, limits.INTERVAL_S)
    if run.rounds is not None:
        in_bounds("run.rounds", run.rounds, limits.ROUNDS)
    in_bounds("run.concurrency", run.concurrency, limits.CONCURRENCY)
    if run.rotate is not None:
        from shadow_burnin.io.log.rotation import parse_rotate

        parse_rotate(run.rotate, "run.rotate")
    if run.seed is not None:
        in_bounds("run.seed", run.seed, limits.SEED)
    p = m.get("paths", {})
    # the default only when no log is given (data_dir imports platformdirs and tempfile)
    log = p["log"] if "log" in p else str(data_dir() / "shadow-burnin.jsonl")
    paths = PathsConfig(log=log, state=p.get("state", default_state_for(log)))
    return Config(v1=v1, v2=v2, request=request, run=run, paths=paths, source=src,
                  **build_sections(m))


def _forensics(raw: dict[str, Any]) -> ForensicsConfig:
    values: dict[str, Any] = {k: float(v) if k.startswith("tau_") or k == "max_slowdown"
                              else v for k, v in raw.items()}
    f = ForensicsConfig(**values)
    in_bounds("forensics.logprobs", f.logprobs, limits.LOGPROBS)
    in_bounds("forensics.refire", f.refire, limits.REFIRE)
    in_bounds("forensics.aa_every", f.aa_every, limits.AA_EVERY)
    if f.v1b is not None:
        check_url("forensics.v1b", f.v1b)
    if not math.isfinite(f.max_slowdown) or f.max_slowdown < 0:
        raise ValueError(f"forensics.max_slowdown must be >= 0 (0: never), got "
                         f"{f.max_slowdown}")
    for name in ("tau_tie", "tau_drift", "tau_regress"):
        value = getattr(f, name)
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"forensics.{name} must be a positive number, got {value}")
    return f


def default_state_for(log: str) -> str:
    """The state lives beside its log: ``x.jsonl`` → ``x.state``."""
    return str(default_state(Path(log)))


def _drop_none(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _drop_none(v) for k, v in obj.items() if v is not None}
    return obj
