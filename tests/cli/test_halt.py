"""The no-match halt end to end: scripted servers, v2 diverging from round 41 on, a local
webhook receiver, `gates` red, `ack-halt` clearing it (also while `run` holds the log)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
from aiohttp import web

from shadow_burnin.core.halt import epoch
from shadow_burnin.io.log.sidecars import events_path
from tests.cli.conftest import invoke, read_log, write_prompts

DIVERGE_AFTER = 40  # v2 prepends a salt from request 41 on: every round is no-match


class Receiver:
    """A webhook receiver on its own event loop in a thread (``run`` uses asyncio.run)."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.json())
        return web.Response(text="ok")

    @contextlib.contextmanager
    def serving(self) -> Iterator[Receiver]:
        loop = asyncio.new_event_loop()
        up = threading.Event()
        box: dict = {}

        async def setup() -> None:
            app = web.Application()
            app.router.add_post("/hook", self._handle)
            box["runner"] = runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            self.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"

        def main() -> None:
            loop.run_until_complete(setup())
            up.set()
            loop.run_forever()

        thread = threading.Thread(target=main, daemon=True)
        thread.start()
        assert up.wait(10)
        try:
            yield self
        finally:
            asyncio.run_coroutine_threadsafe(box["runner"].cleanup(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()


def config(path: Path, **halt: object) -> Path:
    lines = ["[halt]", 'window = "10m"', "min_rounds = 30", "threshold = 0.2"]
    lines += [f"{k} = {orjson.dumps(v).decode()}" for k, v in halt.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def events(log: Path, name: str | None = None) -> list[dict]:
    """The events of a log: in <log>.events.jsonl, never in the log itself."""
    assert all("kind" not in r for r in read_log(log))  # the log: rounds only
    path = events_path(log)
    found = read_log(path) if path.exists() else []
    return [r for r in found if r.get("kind") == "event" and (name is None or r["event"] == name)]


def gate_state(log: Path, gate: str = "halt") -> tuple[int, str]:
    res = invoke("gates", "--json", "--log", log)
    report = orjson.loads(res.stdout)
    return res.exit_code, next(g["state"] for g in report["gates"] if g["gate"] == gate)


def test_halt_webhook_gates_red_ack_clears(tmp_path: Path, spawn_scripted) -> None:
    v1, _ = spawn_scripted()
    v2, _ = spawn_scripted(diverge_after=DIVERGE_AFTER, diverge_mode="prepend")
    log = tmp_path / "b.jsonl"
    prompts = write_prompts(tmp_path / "p.jsonl")
    with Receiver().serving() as rx:
        cfg = config(tmp_path / "c.toml", webhook=rx.url)
        res = invoke("run", "--config", cfg, "--v1", v1, "--v2", v2, "--prompts", prompts,
                     "--rounds", 80, "--interval", 0, "--log", log, "--quiet")
        assert res.exit_code == 0, res.output
    assert "NO-MATCH HALT" in res.stderr and "round 51" in res.stderr
    rounds = [r for r in read_log(log) if r.get("kind", "round") == "round"]
    assert len(rounds) == 80  # halt_action "flag": the burn-in kept going
    (halt,) = events(log, "halt")
    # within the window: 11 no-match of 51 (> 20 %) at the first round it can be
    assert halt["round"] == 51 and halt["window"]["no_match"] == 11
    assert halt["window"]["parity_rounds"] == 51 and halt["action"] == "flag"
    assert sum(p["no_match"] for p in halt["worst_prompts"]) >= 5
    # the webhook got it, and its delivery is logged
    assert len(rx.bodies) == 1 and rx.bodies[0]["halt"]["round"] == 51
    assert rx.bodies[0]["v2"] == v2 and "HALT at round 51" in rx.bodies[0]["text"]
    assert [(e["channel"], e["ok"]) for e in events(log, "halt-alert")] == [("webhook", True)]
    # gates: red until acknowledged
    assert gate_state(log) == (1, "fail")
    state = orjson.loads((tmp_path / "b.state").read_bytes())
    assert state["halt"]["active"] is True
    res = invoke("ack-halt", "--log", log, "--reason", "known: v2 build 812 salts replies",
                 "--by", "ops")
    assert res.exit_code == 0 and "acknowledged the halt at round 51" in res.stdout
    (ack,) = events(log, "ack-halt")
    assert ack["reason"] == "known: v2 build 812 salts replies" and ack["by"] == "ops"
    assert ack["halt_round"] == 51
    assert gate_state(log)[1] == "pass"
    assert "nothing to acknowledge" in invoke("ack-halt", "--log", log, "--reason", "x").stdout
    assert invoke("ack-halt", "--log", log, "--reason", "  ").exit_code == 2


def test_halt_action_stop(tmp_path: Path, spawn_scripted) -> None:
    v1, _ = spawn_scripted()
    v2, _ = spawn_scripted(diverge_after=DIVERGE_AFTER, diverge_mode="prepend")
    log = tmp_path / "s.jsonl"
    marker = tmp_path / "on_halt.json"
    cfg = config(tmp_path / "c.toml", action="stop", on_halt=f"cat > {marker}")
    res = invoke("run", "--config", cfg, "--v1", v1, "--v2", v2, "--prompts",
                 write_prompts(tmp_path / "p.jsonl"), "--rounds", 500, "--interval", 0,
                 "--log", log, "--quiet")
    assert res.exit_code == 0, res.output
    assert "halted at round 51" in res.stderr
    # the round that trips the halt is the last one logged (none in flight after it)
    assert [r["round"] for r in read_log(log)] == list(range(1, 52))
    assert orjson.loads(marker.read_bytes())["halt"]["action"] == "stop"
    assert [e["ok"] for e in events(log, "halt-alert")] == [True]


def test_ack_while_run_holds_the_log(tmp_path: Path, spawn_scripted, run_proc) -> None:
    v1, _ = spawn_scripted()
    v2, _ = spawn_scripted(diverge_after=DIVERGE_AFTER, diverge_mode="prepend")
    log = tmp_path / "r.jsonl"
    cfg = config(tmp_path / "c.toml")
    proc = run_proc("run", "--config", cfg, "--v1", v1, "--v2", v2, "--prompts",
                    write_prompts(tmp_path / "p.jsonl"), "--rounds", 100, "--interval", 0.05,
                    "--log", log, "--quiet")
    halted = False
    for _ in range(600):  # a bounded poll of the condition (the halt is at round 51)
        path = events_path(log)
        if path.exists() and b'"event":"halt"' in path.read_bytes():
            halted = True
            break
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    assert halted, proc.communicate()[1][-2000:]
    res = invoke("ack-halt", "--log", log, "--reason", "seen it")
    assert res.exit_code == 0 and "acknowledged the halt at round 51" in res.stdout, res.output
    assert "the running burn-in reads it at its next commit" in res.stdout
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    assert b"halt acknowledged: seen it" in err  # the running burn-in picked it up
    seq = [(e["event"], e.get("round") or e.get("halt_round")) for e in events(log)
           if e["event"] in ("halt", "ack-halt")]
    assert seq[:2] == [("halt", 51), ("ack-halt", 51)]
    ack = events(log, "ack-halt")[0]
    rounds = read_log(log)
    assert [r["round"] for r in rounds] == list(range(1, 101))  # wc -l == rounds
    if len(seq) > 2:  # v2 still diverges: a new halt needs 30 rounds after the ack
        second = seq[2][1]
        after = [r for r in rounds if epoch(r["ts"]) >= epoch(ack["ts"]) and r["round"] <= second]
        assert seq[2][0] == "halt" and len(after) >= 30
    assert not list(tmp_path.glob("r.jsonl.ack-halt.*"))
