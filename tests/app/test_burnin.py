"""app.burnin: the session the CLI, the web app and the mirror open."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from shadow_burnin.app.burnin import forensics_plan, open_session, plan_for
from shadow_burnin.config import load
from shadow_burnin.errors import ConfigError, SetupChangedError
from tests.cli.conftest import write_prompts


def cfg_for(tmp_path: Path, **run: object):
    prompts = write_prompts(tmp_path / "p.jsonl")
    return load(None, {"v1": {"url": "http://127.0.0.1:9"}, "v2": {"url": "http://127.0.0.1:9"},
                       "run": {"prompts": str(prompts), **run},
                       "paths": {"log": str(tmp_path / "b.jsonl")}})


def test_seed_from_config_then_kept(tmp_path: Path) -> None:
    session = open_session(cfg_for(tmp_path, seed=7))
    try:
        assert session.plan.seed == 7 and len(session.prompts) == 6
        session.store.save_state()
    finally:
        session.close()
    again = open_session(cfg_for(tmp_path, seed=99))  # a restart keeps its own seed
    try:
        assert again.plan.seed == 7
    finally:
        again.close()


def test_setup_change_refused_unless_told(tmp_path: Path) -> None:
    session = open_session(cfg_for(tmp_path, seed=1))
    session.store.append({"schema": 1, "round": 1, "ts": "2026-11-27T00:00:01.000Z",
                          "prompt_id": "p0", "category": "c0", "bucket": "exact",
                          "divergence_byte": None, "prefix_match_chars": None,
                          "v1": {"text": "a"}, "v2": {"text": "a"},
                          "setup": session.plan.setup, "seed": 1, "cursor": 0})
    session.close()
    other = load(None, {"v1": {"url": "http://127.0.0.1:10"}, "v2": {"url": "http://127.0.0.1:9"},
                        "run": {"prompts": str(tmp_path / "p.jsonl")},
                        "paths": {"log": str(tmp_path / "b.jsonl")}})
    with pytest.raises(SetupChangedError, match="different setup"):
        open_session(other)
    archived: list[str] = []
    fresh = open_session(other, new_run=True, warn=archived.append)
    try:
        assert fresh.store.state.last_round == 0
        assert any("archived" in m for m in archived)
    finally:
        fresh.close()


def test_missing_key_refused_before_any_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    cfg = load(None, {"v1": {"url": "http://127.0.0.1:9", "api_key_env": "NO_SUCH_KEY_VAR"},
                      "paths": {"log": str(tmp_path / "b.jsonl")}})
    with pytest.raises(ConfigError, match="NO_SUCH_KEY_VAR is not set"):
        open_session(cfg)
    assert list(tmp_path.iterdir()) == []


def test_calibration_reads_aa_inside_rounds(tmp_path: Path) -> None:
    """A/A results in their round's record (the new layout) feed --calibrate too."""
    log = tmp_path / "b.jsonl"
    aa = {"target": "v1", "bucket": "exact", "a": {"text": "x"}, "b": {"text": "x"},
          "noise": {"moves": [0.3], "drifts": [0.2]}}
    rec = {"schema": 1, "round": 1, "ts": "2026-11-27T00:00:01.000Z", "prompt_id": "p",
           "category": "c", "bucket": "exact", "divergence_byte": None,
           "prefix_match_chars": None, "v1": {"text": "x"}, "v2": {"text": "x"}, "aa": aa}
    log.write_bytes(orjson.dumps(rec) + b"\n")
    cfg = load(None, {"paths": {"log": str(log)}, "forensics": {"calibrate": True}})
    noise = forensics_plan(cfg, plan_for(cfg, "s", 1)).aa_noise
    assert noise is not None and noise.moves == [0.3] and noise.drifts == [0.2]
