"""app.files: the checks every command makes on the files it reads and writes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shadow_burnin.app.files import check_ppl_log, check_store_paths, require_log
from shadow_burnin.config import load
from shadow_burnin.errors import ConfigError, LogError


def test_require_log(tmp_path: Path) -> None:
    with pytest.raises(LogError, match="no such log file"):
        require_log(tmp_path / "x.jsonl")
    os.mkfifo(tmp_path / "f")
    with pytest.raises(LogError, match="FIFO"):
        require_log(tmp_path / "f")
    (tmp_path / "ok.jsonl").write_text("")
    assert require_log(tmp_path / "ok.jsonl") == tmp_path / "ok.jsonl"


@pytest.mark.parametrize("state", ["b.jsonl", "b.jsonl.lock", "b.jsonl.events.jsonl",
                                   "b.jsonl.torn", "b.jsonl.idx", "b.ppl.jsonl", "c.toml"])
def test_store_paths_refused(tmp_path: Path, state: str) -> None:
    with pytest.raises(ConfigError):
        check_store_paths(tmp_path / "b.jsonl", tmp_path / state, [tmp_path / "c.toml"])


def test_store_paths_accepted(tmp_path: Path) -> None:
    check_store_paths(tmp_path / "b.jsonl", tmp_path / "b.state")
    check_store_paths(tmp_path / "b.log", tmp_path / "b.log.state")
    check_store_paths(tmp_path / "b.jsonl", tmp_path / "elsewhere" / "x.state")


def test_log_that_is_a_side_file_of_the_state_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        check_store_paths(tmp_path / "s.lock", tmp_path / "s")


@pytest.mark.parametrize("ppl", ["b.jsonl", "b.state", "b.jsonl.lock", "b.jsonl.events.jsonl"])
def test_ppl_log_refused(tmp_path: Path, ppl: str) -> None:
    cfg = load(None, {"paths": {"log": str(tmp_path / "b.jsonl")},
                      "ppl": {"log": str(tmp_path / ppl)}})
    with pytest.raises(ConfigError, match="refusing to append ppl runs"):
        check_ppl_log(cfg)


def test_default_ppl_log_accepted(tmp_path: Path) -> None:
    cfg = load(None, {"paths": {"log": str(tmp_path / "b.jsonl")}})
    assert check_ppl_log(cfg) == tmp_path / "b.ppl.jsonl"
