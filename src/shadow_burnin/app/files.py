"""Which files a command reads and writes, checked in one place before any is touched.

- :func:`require_log` — the one "no such log file" (and "not a regular file") check of
  every command that reads a log;
- :func:`log_files` — the log's family (``sidecars.LogFiles``) under a config;
- :func:`inputs_of` — the files a config makes a command read (config, prompts, text);
- :func:`check_store_paths` — ``run``/``import-legacy``: the state must not be the log or
  one of its side files, and neither may be an input of the command;
- :func:`guard` / :func:`write` — an output file (``gates --write``, reports, exports)
  through ``sidecars.guard_output`` / ``write_output``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from shadow_burnin.config import Config
from shadow_burnin.errors import ConfigError, LogError
from shadow_burnin.inputs import check_input
from shadow_burnin.io.log.logset import is_segment_of
from shadow_burnin.io.log.sidecars import (
    LogFiles,
    default_ppl,
    default_state,
    guard_output,
    write_output,
)

NO_LOG = "no such log file (run `shadow-burnin run` first, or pass --log)"


def require_log(path: str | Path) -> Path:
    """The log a reading command needs: it exists and is a regular file (LogError)."""
    log = Path(path)
    if not check_input(log, LogError, "log"):
        raise LogError(log, NO_LOG)
    return log


def log_files(cfg: Config) -> LogFiles:
    return LogFiles(Path(cfg.paths.log), Path(cfg.paths.state), Path(cfg.ppl_log()))


def inputs_of(cfg: Config, *extra: str | Path | None) -> list[Path]:
    """Files the command reads besides the log: the config, prompts, the ppl text."""
    named = [cfg.source, cfg.run.prompts, cfg.ppl.text, *extra]
    return [Path(p) for p in named if p]


def _same(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def _side_files(log: Path) -> list[Path]:
    """The log's side files other than its state (which the caller names)."""
    return [p for p in LogFiles(log).members()
            if p != default_state(log) and p.name != default_state(log).name + ".tmp"
            and p != log]


def check_store_paths(log: Path, state: Path, inputs: Iterable[Path] = ()) -> None:
    """Refuse (ConfigError) a state that is the log or one of the log's other side files
    (lock, events, torn, index), a log that is another log's side file named as the
    state, and a log or state that is an input of this command."""
    if _same(log, state):
        raise ConfigError(state, "the state file and the log must differ")
    if is_segment_of(log, state) or any(_same(state, side) for side in _side_files(log)):
        raise ConfigError(state, f"refusing to use a side file of {log} as the state")
    if any(_same(log, side) for side in _side_files(state)):
        raise ConfigError(log, f"refusing to use a side file of {state} as the log")
    for p in inputs:
        for target, what in ((log, "log"), (state, "state")):
            if _same(target, p):
                raise ConfigError(target, f"the {what} file is also an input of this "
                                  "command (config, prompts or text); pick another path")


def guard(cfg: Config, target: Path, *, kind: str, medium: str,
          inputs: Iterable[Path] = ()) -> None:
    """Refuse an output path before any work is done (see ``sidecars.guard_output``)."""
    guard_output(target, [log_files(cfg)], kind=kind, medium=medium,
                 inputs=[*inputs_of(cfg), *inputs])


def write(cfg: Config, target: Path, text: str, *, kind: str, medium: str,
          inputs: Iterable[Path] = ()) -> None:
    """Write an output file: guarded, marked, atomic (temp file + rename)."""
    write_output(target, text, [log_files(cfg)], kind=kind, medium=medium,
                 inputs=[*inputs_of(cfg), *inputs])


def check_ppl_log(cfg: Config) -> Path:
    """The ``ppl`` runs file (appended to by ``ppl``): not the log, the state or any
    other side file of the log, not an input."""
    ppl, log = Path(cfg.ppl_log()), Path(cfg.paths.log)
    if _same(ppl, log) or _same(ppl, Path(cfg.paths.state)) or any(
            _same(ppl, side) for side in _side_files(log) if side != default_ppl(log)):
        raise ConfigError(ppl, f"refusing to append ppl runs here: it is {log} or one of "
                          "its side files (state, lock, events, index, torn)")
    for p in inputs_of(cfg):
        if _same(ppl, p):
            raise ConfigError(ppl, "refusing to append ppl runs to an input of this command")
    return ppl
