"""Options shared by commands, the bounded number types, and the one place a Config is
made from flags. Help strings read their defaults from the config dataclasses."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from shadow_burnin import config as config_mod
from shadow_burnin.app.window import make_window as make_window  # the reading commands'
from shadow_burnin.config import Config

if TYPE_CHECKING:
    from rich.console import Console

F = TypeVar("F", bound=Callable[..., Any])


def bounded(bounds: tuple[int, int]) -> click.IntRange:
    """A click integer type for ``core.limits`` bounds (one definition of each bound)."""
    return click.IntRange(bounds[0], bounds[1])


def seconds(bounds: tuple[float, float], *, zero_ok: bool) -> click.FloatRange:
    """A click float type in seconds, finite, within ``core.limits`` bounds."""
    return click.FloatRange(bounds[0], bounds[1], min_open=not zero_ok)


def default(value: object) -> str:
    """``[64]``: a default as shown in help strings (read from the config dataclasses)."""
    return f"[{value}]"


def store_options(fn: F) -> F:
    """``--config``, ``--log``, ``--state``: same defaults as ``run``."""
    fn = click.option("--state", "state_path", type=click.Path(path_type=Path, readable=False),
                      help="State file (default: beside the log, x.jsonl → x.state).")(fn)
    fn = click.option("--log", "log_path", type=click.Path(path_type=Path, readable=False),
                      help="JSONL log (default: $XDG_DATA_HOME/shadow-burnin/"
                           "shadow-burnin.jsonl).")(fn)
    fn = click.option("--config", "config_path", type=click.Path(path_type=Path, readable=False),
                      help="TOML config file ([v1] [v2] [request] [run] [paths]).")(fn)
    return fn


def logs_options(fn: F) -> F:
    """``--config``, ``--log`` (repeatable; each a file or a quoted glob, expanded by us),
    ``--state``: the reading commands that take several logs (a fleet's shards)."""
    fn = click.option("--state", "state_path", type=click.Path(path_type=Path, readable=False),
                      help="State file (default: beside the log, x.jsonl → x.state).")(fn)
    fn = click.option("--log", "log_specs", multiple=True, metavar="LOG|GLOB",
                      help="JSONL log; repeat it or give a quoted glob for several shards "
                           "(e.g. 'fleet/*/burnin.jsonl'), pooled, each shard named by its "
                           "path under their common directory (default: $XDG_DATA_HOME/"
                           "shadow-burnin/shadow-burnin.jsonl).")(fn)
    fn = click.option("--config", "config_path", type=click.Path(path_type=Path, readable=False),
                      help="TOML config file ([v1] [v2] [request] [run] [paths]).")(fn)
    return fn


def first_log(specs: tuple[str, ...]) -> Path | None:
    """The config's log when ``--log`` names exactly one file (the state, ppl runs and
    outputs are then placed beside it as before); None for several or a glob."""
    from shadow_burnin.app.logset import is_glob

    if len(specs) == 1 and not is_glob(specs[0]):
        return Path(specs[0])
    return None


def window_options(fn: F) -> F:
    fn = click.option("--until", help="Only rounds that started before this ISO-8601 time.")(fn)
    fn = click.option("--since", help="Only rounds that started at/after this ISO-8601 time "
                      "(e.g. 2026-04-20T00:00:00Z).")(fn)
    return fn


def load_config(config_path: Path | None, overrides: dict[str, dict[str, Any]] | None = None,
                log_path: Path | None = None, state_path: Path | None = None) -> Config:
    over = {k: dict(v) for k, v in (overrides or {}).items()}
    paths = over.setdefault("paths", {})
    if log_path is not None:
        paths["log"] = str(log_path)
    if state_path is not None:
        paths["state"] = str(state_path)
    return config_mod.load(config_path, over)


def out_console() -> Console:
    """stdout console; off a terminal, wide enough that tables are not truncated."""
    from rich.console import Console  # rich only for the commands that print tables

    probe = Console()
    return probe if probe.is_terminal else Console(width=160)
