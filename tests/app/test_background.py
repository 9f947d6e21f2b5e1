"""Figures computed on a second thread when a core is spare: the same ``bench --json``
either way, and an error in the thread reaches the caller."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from shadow_burnin.app import evidence
from shadow_burnin.app.evidence import Background
from shadow_burnin.cli import cli
from shadow_burnin.io.log.index import load
from tests.io.log.test_logscan import write_log


def test_bench_is_the_same_with_and_without_the_second_thread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "a.jsonl"
    write_log(log, 11, 600)
    load(log)
    outs = []
    for spare in (True, False):
        monkeypatch.setattr(evidence, "spare_core", lambda spare=spare: spare)
        got = CliRunner().invoke(cli, ["bench", "--json", "--log", str(log)])
        assert got.exit_code == 0, got.output
        outs.append(got.stdout)
    assert outs[0] == outs[1]


@pytest.mark.parametrize("spare", [True, False])
def test_background_returns_the_value_or_raises_the_error(
        monkeypatch: pytest.MonkeyPatch, spare: bool) -> None:
    monkeypatch.setattr(evidence, "spare_core", lambda: spare)
    assert Background(sum, [1, 2, 3]).result() == 6

    def boom() -> None:
        raise ValueError("in the thread")

    job = Background(boom)
    with pytest.raises(ValueError, match="in the thread"):
        job.result()


def test_no_second_thread_for_the_largest_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    monkeypatch.setattr(evidence, "spare_core", lambda: True)
    seen: list[bool] = []

    def where() -> bool:
        seen.append(threading.current_thread() is threading.main_thread())
        return True

    Background(where, rows=evidence.PARALLEL_MAX_ROWS + 1).result()
    Background(where, rows=10).result()
    assert seen == [True, False]
