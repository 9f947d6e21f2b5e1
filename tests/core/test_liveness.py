"""core.liveness: the one rule (stall, unreachable spike) and its episodes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shadow_burnin.core.liveness import LivenessMonitor, LivenessRule, conditions, spiking
from shadow_burnin.core.records import BUCKETS

RULE = LivenessRule(stall_s=600, spike_window=4, spike_rounds=3)


def kinds(alerts: list[dict]) -> list[tuple[str, str | None]]:
    return [(a["kind"], a.get("side")) for a in alerts]


def test_stall_fires_once_per_episode_and_recovers() -> None:
    m = LivenessMonitor(RULE)
    m.start(1000.0)
    assert m.check(1599.0) == []  # not yet
    first = m.check(1600.0)
    assert kinds(first) == [("stall", None)] and "10 min" in first[0]["text"]
    assert m.check(1700.0) == [] and m.check(99_999.0) == []  # once per episode
    back = m.committed(100_000.0, ["exact"])
    assert kinds(back) == [("stall-recovered", None)]
    assert back[0]["seconds"] == pytest.approx(99_000.0)
    assert m.check(100_599.0) == []
    assert kinds(m.check(100_600.0)) == [("stall", None)]  # a new episode


def test_a_commit_resets_the_stall_clock() -> None:
    m = LivenessMonitor(RULE)
    m.start(0.0)
    assert m.committed(500.0, ["exact"]) == []
    assert m.check(1000.0) == []
    assert kinds(m.check(1100.0)) == [("stall", None)]


def test_spike_fires_once_per_side_with_hysteresis() -> None:
    m = LivenessMonitor(RULE)
    m.start(0.0)
    assert m.committed(1, ["v2-unreachable", "exact"]) == []
    out = m.committed(2, ["both-unreachable"])  # v2: 2 of 3, v1: 1
    assert out == []
    out = m.committed(3, ["v2-unreachable"])  # v2: 3 of the last 4
    assert kinds(out) == [("unreachable-spike", "v2")] and out[0]["down"] == 3
    assert m.committed(4, ["v2-unreachable", "v2-unreachable"]) == []  # still the episode
    # 2 of the last 4 down: above half of 3 (1), no recovery yet
    assert m.committed(5, ["exact", "exact"]) == []
    out = m.committed(6, ["exact"])  # 1 of the last 4
    assert kinds(out) == [("unreachable-recovered", "v2")]


def test_conditions_is_the_status_view_of_the_same_rule() -> None:
    recent = ["exact", "v1-unreachable", "both-unreachable", "v1-unreachable"]
    got = conditions(RULE, 0.0, recent, 600.0)
    assert kinds(got) == [("stall", None), ("unreachable-spike", "v1")]
    assert conditions(RULE, 0.0, recent[:3], 10.0) == []
    assert conditions(RULE, None, [], 1e9) == []  # no round yet: nothing to say


def test_rule_checks_its_values() -> None:
    with pytest.raises(ValueError, match="spike_rounds"):
        LivenessRule(spike_window=4, spike_rounds=5)
    with pytest.raises(ValueError, match="spike_window"):
        LivenessRule(spike_window=0)


@given(st.lists(st.sampled_from(BUCKETS), max_size=60))
def test_the_watcher_raises_a_spike_exactly_where_status_first_sees_one(
        buckets: list[str]) -> None:
    """Shared rule: feeding rounds one by one, a spike starts on side X exactly when
    ``spiking`` (what ``status`` applies) first holds for X outside an episode."""
    m = LivenessMonitor(RULE)
    m.start(0.0)
    active: set[str] = set()
    for i, b in enumerate(buckets):
        out = m.committed(float(i), [b])
        started = {a["side"] for a in out if a["kind"] == "unreachable-spike"}
        now = set(spiking(RULE, buckets[:i + 1]))
        assert started == now - active
        ended = {a["side"] for a in out if a["kind"] == "unreachable-recovered"}
        active = (active | started) - ended
        assert now <= active  # while status sees a spike, the watcher is in its episode
