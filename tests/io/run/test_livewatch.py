"""The liveness watch inside ``run``: scripted servers that hang or fail, a fake clock and
a tick the test controls (no sleeps: every wait polls a condition a bounded number of
times)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from click.testing import CliRunner

from shadow_burnin.app.alerting import rule_for
from shadow_burnin.app.burnin import open_session
from shadow_burnin.app.dashboard import Dashboard, status
from shadow_burnin.config import Config, load
from shadow_burnin.io.log.events import read_events
from shadow_burnin.io.run.livewatch import LivenessWatch
from shadow_burnin.render.progress import NullProgress
from tests.cli.conftest import write_prompts


class FakeClock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


async def until(cond: Callable[[], bool], tries: int = 3000) -> None:
    """Poll ``cond`` between event-loop turns, a bounded number of times."""
    for _ in range(tries):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never held")


def config(tmp_path: Path, v1: str, v2: str, run: dict[str, Any],
           alerts: dict[str, Any] | None = None) -> tuple[Config, Path]:
    got = tmp_path / "alerts.out"
    # the halt's alert command: the JSON body on stdin, the kind in the environment
    cmd = f'{{ cat; echo; echo "kind=$SHADOW_BURNIN_ALERT_KIND"; }} >> {got}'
    prompts = write_prompts(tmp_path / "p.jsonl")
    cfg = load(None, {"v1": {"url": v1}, "v2": {"url": v2},
                      "request": {"max_tokens": 8, "timeout": 3600},
                      "run": {"prompts": str(prompts), "interval": 0, **run},
                      "paths": {"log": str(tmp_path / "b.jsonl")},
                      "halt": {"on_halt": cmd}, "alerts": alerts or {}})
    return cfg, got


def liveness_events(log: Path) -> list[dict[str, Any]]:
    return [e for e in read_events(log) if e.get("event") == "liveness"]


async def test_both_sides_hang_the_stall_fires_once_then_recovers(
        tmp_path: Path, scripted_server: Any) -> None:
    v1, v2 = await scripted_server(), await scripted_server()
    for s in (v1, v2):
        await s.set_fault("hang", first=2)  # round 1 answers, round 2 hangs on both
    cfg, got = config(tmp_path, v1.url, v2.url, {"rounds": 2, "concurrent": True})
    clock = FakeClock(1_000_000.0)
    ticks: asyncio.Queue[None] = asyncio.Queue()
    warnings: list[str] = []

    async def tick() -> None:
        await ticks.get()

    session = open_session(cfg)
    session.live = LivenessWatch(cfg.alerts, cfg.halt, Path(cfg.paths.log),
                                 warn=warnings.append, context={"log": cfg.paths.log},
                                 clock=clock, tick=tick)
    watch = session.live
    try:
        run = asyncio.create_task(session.run(NullProgress(), notice=warnings.append,
                                              loud=warnings.append))
        # round 1 committed, round 2 hangs on both sides
        await until(lambda: v1.active == 1 and v2.active == 1
                    and len(watch.monitor.recent) == 1)  # seen by the watch
        clock.t += 599.0
        await ticks.put(None)
        await until(ticks.empty)
        clock.t += 1.0  # 600 s since round 1's commit: the stall
        for _ in range(4):  # ticking on: still one alert for this episode
            await ticks.put(None)
            clock.t += 300.0
        await until(lambda: ticks.empty() and len(watch.sent) >= 1)
        await until(lambda: len(liveness_events(Path(cfg.paths.log))) == 1)
        assert [a["kind"] for a in watch.sent] == ["stall"]
        await v1.stop()  # the hung requests end: round 2 is committed
        await v2.stop()
        outcome = await asyncio.wait_for(run, 60)
    finally:
        session.close()
    assert outcome.rounds == 2
    assert [a["kind"] for a in watch.sent] == ["stall", "stall-recovered"]
    events = read_events(Path(cfg.paths.log))
    assert [e["alert"] for e in events if e.get("event") == "liveness"] == \
        ["stall", "stall-recovered"]
    sent = [e for e in events if e.get("event") == "liveness-alert"]
    assert [(e["alert"], e["channel"], e["ok"]) for e in sent] == \
        [("stall", "command", True), ("stall-recovered", "command", True)]
    lines = got.read_text().splitlines()
    bodies = [orjson.loads(x) for x in lines if x.startswith("{")]
    assert [b["event"] for b in bodies] == ["stall", "stall-recovered"]
    assert "STALLED" in bodies[0]["text"] and bodies[0]["log"] == cfg.paths.log
    assert [x for x in lines if x.startswith("kind=")] == ["kind=stall", "kind=stall-recovered"]
    assert any("STALLED" in w for w in warnings)


async def test_a_side_going_unreachable_raises_one_spike_and_its_recovery(
        tmp_path: Path, scripted_server: Any) -> None:
    v1, v2 = await scripted_server(), await scripted_server()
    await v2.set_fault("http-503", first=1, last=4)
    cfg, got = config(tmp_path, v1.url, v2.url, {"rounds": 8},
                      {"spike_window": 4, "spike_rounds": 3})
    session = open_session(cfg)
    never: asyncio.Event = asyncio.Event()

    async def tick() -> None:
        await never.wait()

    session.live = LivenessWatch(cfg.alerts, cfg.halt, Path(cfg.paths.log),
                                 warn=lambda _m: None, tick=tick)
    try:
        await session.run(NullProgress(), notice=lambda _m: None, loud=lambda _m: None)
    finally:
        session.close()
    log = Path(cfg.paths.log)
    buckets = [orjson.loads(x)["bucket"] for x in log.read_bytes().splitlines()]
    assert buckets == ["v2-unreachable"] * 4 + ["exact"] * 4
    events = liveness_events(log)
    assert [(e["alert"], e.get("side")) for e in events] == \
        [("unreachable-spike", "v2"), ("unreachable-recovered", "v2")]
    assert events[0]["down"] == 3 and events[1]["down"] == 1
    bodies = [orjson.loads(x) for x in got.read_text().splitlines() if x.startswith("{")]
    assert [b["event"] for b in bodies] == ["unreachable-spike", "unreachable-recovered"]


async def test_status_and_the_watcher_apply_the_one_rule(tmp_path: Path,
                                                         scripted_server: Any) -> None:
    """A run whose v2 stays down: the watcher's spike and ``status``'s agree (same
    [alerts] config), and ``status --alert`` sends it through the same channel."""
    v1, v2 = await scripted_server(), await scripted_server()
    await v2.set_fault("http-503")
    alerts = {"spike_window": 5, "spike_rounds": 4, "stall": "1h"}
    cfg, got = config(tmp_path, v1.url, v2.url, {"rounds": 5}, alerts)
    session = open_session(cfg)
    never: asyncio.Event = asyncio.Event()

    async def tick() -> None:
        await never.wait()

    session.live = LivenessWatch(cfg.alerts, cfg.halt, Path(cfg.paths.log),
                                 warn=lambda _m: None, tick=tick)
    try:
        await session.run(NullProgress(), notice=lambda _m: None, loud=lambda _m: None)
    finally:
        session.close()
    watcher = [(a["kind"], a.get("side"), a.get("down")) for a in session.live.sent]
    assert watcher == [("unreachable-spike", "v2", 4)]
    log = Path(cfg.paths.log)
    last = orjson.loads(log.read_bytes().splitlines()[-1])["ts"]
    from datetime import datetime
    t_last = datetime.fromisoformat(last).timestamp()
    st = status(Dashboard(cfg), t_last + 60, rule=rule_for(cfg))
    assert [(a["kind"], a.get("side"), a.get("down")) for a in st["alerts"]] == \
        [("unreachable-spike", "v2", 5)]  # status sees the whole window: 5 of 5
    st = status(Dashboard(cfg), t_last + 3600, rule=rule_for(cfg))
    assert [a["kind"] for a in st["alerts"]] == ["stall", "unreachable-spike"]
    toml = tmp_path / "c.toml"
    toml.write_text(f"[halt]\non_halt = {orjson.dumps(cfg.halt.on_halt).decode()}\n"
                    "[alerts]\nspike_window = 5\nspike_rounds = 4\nstall = \"1000d\"\n")
    got.unlink()
    from shadow_burnin.cli import cli
    out = await asyncio.to_thread(  # the CLI runs its own event loop
        CliRunner().invoke, cli, ["status", "--config", str(toml), "--log", str(log),
                                  "--json", "--alert"])
    assert out.exit_code == 1, out.output
    assert [a["kind"] for a in orjson.loads(out.stdout)["alerts"]] == ["unreachable-spike"]
    assert "alert unreachable-spike: command: sent" in out.stderr
    bodies = [orjson.loads(x) for x in got.read_text().splitlines() if x.startswith("{")]
    assert [(b["event"], b["alert"]["side"]) for b in bodies] == [("unreachable-spike", "v2")]


async def test_run_wires_the_watch_from_the_config_and_the_stall_flag(
        tmp_path: Path, scripted_server: Any) -> None:
    """``shadow-burnin run`` itself (no watch injected): [alerts] from the file, --stall
    from the command line; a side down in every round raises the spike once."""
    v1, v2 = await scripted_server(), await scripted_server()
    await v2.set_fault("http-503")
    got = tmp_path / "alerts.out"
    prompts = write_prompts(tmp_path / "p.jsonl")
    toml = tmp_path / "c.toml"
    toml.write_text(f'[halt]\non_halt = "cat >> {got}; echo >> {got}"\n'
                    "[alerts]\nspike_window = 3\nspike_rounds = 2\n")
    log = tmp_path / "b.jsonl"
    from shadow_burnin.cli import cli
    out = await asyncio.to_thread(CliRunner().invoke, cli, [
        "run", "--config", str(toml), "--v1", v1.url, "--v2", v2.url, "--log", str(log),
        "--prompts", str(prompts), "--rounds", "4", "--interval", "0", "--quiet",
        "--stall", "2h", "--max-tokens", "8"])
    assert out.exit_code == 0, out.output
    events = liveness_events(log)
    assert [(e["alert"], e.get("side"), e["down"]) for e in events] == \
        [("unreachable-spike", "v2", 2)]
    assert "v2 unreachable in 2 of the last 2 rounds" in out.stderr
    bodies = [orjson.loads(x) for x in got.read_text().splitlines() if x.startswith("{")]
    assert [b["event"] for b in bodies] == ["unreachable-spike"]
    bad = await asyncio.to_thread(CliRunner().invoke, cli, [
        "run", "--v1", v1.url, "--v2", v2.url, "--log", str(tmp_path / "c.jsonl"),
        "--stall", "0s"])
    assert bad.exit_code == 2 and "alerts.stall" in bad.stderr
    assert not (tmp_path / "c.jsonl").exists()
