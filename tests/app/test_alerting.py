"""[alerts]: validated in the one config object; ``rule_for`` gives the shared rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from shadow_burnin.app.alerting import rule_for
from shadow_burnin.config import load
from shadow_burnin.core.liveness import LivenessRule
from shadow_burnin.errors import ConfigError


def test_alerts_section_defaults_values_and_flag_override(tmp_path: Path) -> None:
    assert rule_for(load(None)) == LivenessRule(600.0, 20, 10)
    p = tmp_path / "c.toml"
    p.write_text('[alerts]\nstall = "1h30m"\nspike_window = 50\nspike_rounds = 5\n')
    cfg = load(p)
    assert rule_for(cfg) == LivenessRule(5400.0, 50, 5)
    assert rule_for(cfg, 60.0) == LivenessRule(60.0, 50, 5)


@pytest.mark.parametrize(("body", "key"), [
    ('stall = "soon"', "alerts.stall"),
    ("stall = -5", "alerts.stall"),
    ("spike_window = 0", "alerts.spike_window"),
    ("spike_rounds = 21", "alerts.spike_rounds"),
    ('enabled = "yes"', "alerts.enabled"),
    ("tick = 3", "alerts.tick"),
])
def test_bad_alerts_values_name_the_file_and_key(tmp_path: Path, body: str, key: str) -> None:
    p = tmp_path / "c.toml"
    p.write_text(f"[alerts]\n{body}\n")
    with pytest.raises(ConfigError) as err:
        load(p)
    assert str(p) in str(err.value) and key in str(err.value)
