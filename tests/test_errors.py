"""The exception tree crosses process boundaries intact (bench scans in worker processes)."""

from __future__ import annotations

import pickle

import pytest

from shadow_burnin.errors import ConfigError, InputError, LogError, PromptFileError, StateError


@pytest.mark.parametrize("kind", [InputError, ConfigError, PromptFileError, StateError,
                                  LogError])
@pytest.mark.parametrize("line", [None, 151])
def test_input_errors_survive_pickling(kind: type[InputError], line: int | None) -> None:
    err = kind("/logs/a.jsonl", "line is not JSON", line=line)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is kind and str(back) == str(err)
    assert (back.path, back.line, back.detail) == (err.path, err.line, err.detail)
