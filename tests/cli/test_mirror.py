"""``shadow-burnin mirror`` as a process, ``run --replay``, ``bench --by source``."""

from __future__ import annotations

import os
import select
import signal
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import openai
import orjson
import pytest

from shadow_burnin.core.prompt import Prompt
from shadow_burnin.io.http.client import RequestSpec, build_body
from tests.cli.conftest import invoke, read_log

Spawn = Callable[..., tuple[str, subprocess.Popen[bytes]]]


@pytest.fixture
def mirror_proc() -> Iterator[Callable[..., tuple[str, subprocess.Popen[bytes]]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str | Path, env: dict[str, str] | None = None
              ) -> tuple[str, subprocess.Popen[bytes]]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shadow_burnin", "mirror", "--listen", "127.0.0.1:0",
             *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})),
            start_new_session=True)
        procs.append(proc)
        assert proc.stderr is not None
        for _ in range(600):  # bounded: the ready line, or the process ended
            if select.select([proc.stderr], [], [], 0.1)[0]:
                line = proc.stderr.readline().decode()
                if line.startswith("mirror listening on "):
                    return line.split()[3], proc
                if not line:
                    break
        raise AssertionError(f"mirror did not start: {proc.poll()}")

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


@pytest.mark.parametrize("mode", [[], ["--single-process"]], ids=["split", "single"])
def test_mirror_serves_logs_captures_and_stops_cleanly(tmp_path: Path, spawn_scripted: Spawn,
                                                       mirror_proc: Callable[..., tuple[
                                                           str, subprocess.Popen[bytes]]],
                                                       mode: list[str]) -> None:
    url1, _ = spawn_scripted(reply_mode="fixed", reply="same answer")
    url2, _ = spawn_scripted(reply_mode="fixed", reply="same answer")
    log, capture = tmp_path / "m.jsonl", tmp_path / "cap.jsonl"
    url, proc = mirror_proc("--v1", url1, "--v2", url2, "--v2-key-env", "SB_V2_KEY",
                            "--log", log, "--capture", capture, "--quiet", *mode,
                            env={"SB_V2_KEY": "sk-shadow-secret"})
    assert b"sk-shadow-secret" not in Path(f"/proc/{proc.pid}/cmdline").read_bytes()
    client = openai.OpenAI(base_url=url + "/v1", api_key="sk-client-secret", max_retries=0)
    messages = [{"role": "user", "content": "hello"}]
    got = client.chat.completions.create(model="m", messages=messages,  # type: ignore[arg-type]
                                         temperature=0, max_tokens=8)
    assert got.choices[0].message.content == "same answer"
    streamed = client.chat.completions.create(model="m", messages=messages,  # type: ignore[arg-type]
                                              temperature=0, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) \
        == "same answer"
    client.completions.create(model="m", prompt="go on", temperature=0.9, max_tokens=4)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert b"3 rounds" in err.splitlines()[-1]
    rounds = read_log(log)
    # (committed in the order the shadow finished them)
    assert sorted(r["bucket"] for r in rounds) == ["exact", "exact", "not-comparable"]
    assert {r["source"] for r in rounds} == {"mirror"}
    assert stat.S_IMODE(os.stat(capture).st_mode) == 0o600
    assert len(capture.read_bytes().splitlines()) == 3
    for path in tmp_path.iterdir():
        assert b"secret" not in path.read_bytes(), path
    assert b"secret" not in err

    # the same log takes `run` rounds too; bench splits them by source
    result = invoke("run", "--v1", url1, "--v2", url2, "--log", log, "--rounds", "2",
                    "--interval", "0", "--logprobs", "0", "--aa-every", "0", "--quiet",
                    "--prompts", capture)
    assert result.exit_code == 0, result.output
    result = invoke("bench", "--log", log, "--by", "source", "--json")
    assert result.exit_code == 0, result.output
    by_source = orjson.loads(result.stdout)["by_source"]
    assert by_source["mirror"]["rounds"] == 3 and by_source["run"]["rounds"] == 2
    assert by_source["mirror"]["counts"]["not-comparable"] == 1
    assert by_source["mirror"]["parity_rounds"] == 2


def test_replay_plays_the_file_once_in_order_at_its_times(tmp_path: Path,
                                                          spawn_scripted: Spawn) -> None:
    url1, _ = spawn_scripted()
    url2, _ = spawn_scripted()
    stamps = ["2026-11-29T07:00:00.000Z", "2026-11-29T07:00:00.400Z",
              "2026-11-29T07:00:01.200Z"]
    ids = ["z-first", "a-second", "m-third"]
    lines = [{"id": i, "category": "mirror-completions", "prompt": f"q {i}",
              "params": {"stop": ["\n\n"]}, "at": t} for i, t in zip(ids, stamps, strict=True)]
    capture = tmp_path / "cap.jsonl"
    capture.write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in lines))
    log = tmp_path / "r.jsonl"
    result = invoke("run", "--replay", capture, "--speed", "2", "--api", "completions",
                    "--v1", url1, "--v2", url2, "--log", log, "--logprobs", "0",
                    "--aa-every", "0", "--concurrency", "3", "--quiet")
    assert result.exit_code == 0, result.output
    assert "replayed the whole file" in result.output
    rounds = [r for r in read_log(log) if r.get("kind", "round") == "round"]
    assert [r["prompt_id"] for r in rounds] == ids
    starts = [datetime.fromisoformat(r["ts"]).timestamp() for r in rounds]
    # never earlier than the captured offsets / speed (0.2 s, 0.6 s) from the first
    # launch (less the first round's own start delay and the ms cut of ts: 20 ms)
    assert starts[1] - starts[0] >= 0.2 - 0.02
    assert starts[2] - starts[0] >= 0.6 - 0.02


def test_prompt_params_go_to_both_sides_and_the_run_stays_greedy() -> None:
    prompt = Prompt("p", "c", prompt="x", params={"stop": ["\n"], "temperature": 0.8,
                                                  "top_p": 0.5})
    body = build_body(RequestSpec(api="completions", max_tokens=7, stream=False), prompt, "m")
    assert body == {"stop": ["\n"], "temperature": 0, "top_p": 0.5, "model": "m",
                    "prompt": "x", "max_tokens": 7, "stream": False}


def test_bad_input_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = invoke("mirror", "--listen", "nowhere", "--log", tmp_path / "m.jsonl")
    assert result.exit_code == 2 and "mirror.listen" in result.output
    assert len(result.output.strip().splitlines()) == 1
    loose = tmp_path / "loose.jsonl"
    loose.write_bytes(b"keep me\n")
    loose.chmod(0o644)
    result = invoke("mirror", "--listen", "127.0.0.1:0", "--capture", loose,
                    "--log", tmp_path / "m.jsonl")
    assert result.exit_code == 2 and "0600" in result.output
    assert loose.read_bytes() == b"keep me\n"
    result = invoke("run", "--speed", "2", "--log", tmp_path / "r.jsonl")
    assert result.exit_code == 2 and "--speed" in result.output
    result = invoke("run", "--replay", tmp_path / "missing.jsonl", "--log",
                    tmp_path / "r.jsonl")
    assert result.exit_code == 2 and "missing.jsonl" in result.output
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"id": "a", "category": "c", "prompt": "x", "params": {"model": 1}}\n')
    result = invoke("run", "--replay", bad, "--log", tmp_path / "r.jsonl")
    assert result.exit_code == 2 and "bad.jsonl:1: params.model" in result.output
    assert not (tmp_path / "r.jsonl").exists()


def test_a_locked_log_stops_the_mirror_before_it_listens(tmp_path: Path) -> None:
    from shadow_burnin.io.log.store import Store

    log = tmp_path / "m.jsonl"
    with Store(log, tmp_path / "m.state"):  # another writer holds the log
        result = invoke("mirror", "--listen", "127.0.0.1:0", "--log", log)
    assert result.exit_code == 2
    assert "another shadow-burnin run is using this log" in result.output
    assert "listening" not in result.output


def test_sigterm_lets_a_client_in_flight_finish(tmp_path: Path, spawn_scripted: Spawn,
                                                mirror_proc: Callable[..., tuple[
                                                    str, subprocess.Popen[bytes]]]) -> None:
    import threading
    import urllib.request

    url1, _ = spawn_scripted(reply_mode="fixed", reply="late but whole", delay_ms=1500)
    url2, _ = spawn_scripted(reply_mode="fixed", reply="late but whole")
    log = tmp_path / "m.jsonl"
    url, proc = mirror_proc("--v1", url1, "--v2", url2, "--log", log, "--quiet")
    client = openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0)
    got: list[str | None] = []
    worker = threading.Thread(target=lambda: got.append(client.completions.create(
        model="m", prompt="p", temperature=0).choices[0].text))
    worker.start()
    for _ in range(300):  # the request reached v1 through the mirror (bounded polling)
        with urllib.request.urlopen(url1 + "/_scripted/state") as resp:
            state = orjson.loads(resp.read())
        if state["count"]:  # ("active" counts this very state request too)
            break
        threading.Event().wait(0.02)
    proc.send_signal(signal.SIGTERM)
    worker.join(60)
    _out, err = proc.communicate(timeout=120)
    assert got == ["late but whole"]
    assert proc.returncode == 0, err
    [r] = read_log(log)
    assert r["bucket"] == "exact"


def test_a_port_in_use_is_one_line_and_exit_2(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = invoke("mirror", "--listen", f"127.0.0.1:{port}", "--log",
                        tmp_path / "m.jsonl")
    assert result.exit_code == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("mode", [[], ["--single-process"]], ids=["split", "single"])
def test_a_dead_shadow_raises_the_liveness_spike(tmp_path: Path, spawn_scripted: Spawn,
                                                 mirror_proc: Callable[..., tuple[
                                                     str, subprocess.Popen[bytes]]],
                                                 mode: list[str]) -> None:
    """``[alerts]`` works in the mirror as in ``run``: a v2 that refuses every copy is an
    unreachable spike (one event), clients are served all along."""
    from shadow_burnin.io.log.events import read_events
    from tests.procs import free_port

    url1, _ = spawn_scripted(reply_mode="fixed", reply="served")
    dead = f"http://127.0.0.1:{free_port()}"
    config = tmp_path / "c.toml"
    config.write_text('[alerts]\nspike_window = 3\nspike_rounds = 3\nstall = "1000d"\n')
    log = tmp_path / "m.jsonl"
    url, proc = mirror_proc("--config", config, "--v1", url1, "--v2", dead, "--log", log,
                            "--quiet", *mode)
    client = openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0)
    for _ in range(3):
        assert client.completions.create(model="m", prompt="p",
                                         temperature=0).choices[0].text == "served"
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert [r["bucket"] for r in read_log(log)] == ["v2-unreachable"] * 3
    spikes = [(e["alert"], e.get("side")) for e in read_events(log)
              if e.get("event") == "liveness"]
    assert spikes == [("unreachable-spike", "v2")]


def _nice_of(tid: int) -> int:
    return int(Path(f"/proc/{tid}/stat").read_text().rsplit(")", 1)[1].split()[16])


def _threads(pid: int) -> list[int]:
    return [int(t) for t in os.listdir(f"/proc/{pid}/task")]


@pytest.mark.parametrize(("args", "policy", "nice"), [
    ((), os.SCHED_IDLE, None),  # the default
    (("--shadow-sched", "nice", "--shadow-nice", "3"), os.SCHED_OTHER, 3),
    (("--shadow-sched", "nice"), os.SCHED_OTHER, 10),
])
def test_the_shadow_process_runs_under_the_scheduling_the_setting_says(
        tmp_path: Path, spawn_scripted: Spawn, args: tuple[str, ...], policy: int,
        nice: int | None, mirror_proc: Callable[..., tuple[str, subprocess.Popen[bytes]]]
        ) -> None:
    url1, _ = spawn_scripted(reply_mode="fixed", reply="same")
    url2, _ = spawn_scripted(reply_mode="fixed", reply="same")
    log = tmp_path / "m.jsonl"
    url, proc = mirror_proc("--v1", url1, "--v2", url2, "--log", log, "--quiet", *args)
    [child] = map(int, Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split())
    client = openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0)
    assert client.completions.create(model="m", prompt="p",
                                     temperature=0).choices[0].text == "same"
    # the clients' process keeps the normal policy; every thread of the shadow process
    # (the commit thread included, started after the setting was applied) has the policy
    assert os.sched_getscheduler(proc.pid) == os.SCHED_OTHER
    mine = _nice_of(proc.pid)
    for tid in _threads(child):
        assert os.sched_getscheduler(tid) == policy
        if nice is not None:
            assert _nice_of(tid) == min(19, mine + nice)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert [r["bucket"] for r in read_log(log)] == ["exact"]


@pytest.mark.parametrize(("line", "field"), [
    ('shadow_sched = "fast"', "mirror.shadow_sched"),
    ("shadow_sched = 1", "mirror.shadow_sched"),
    ("shadow_nice = 20", "mirror.shadow_nice"),
    ("shadow_nice = -1", "mirror.shadow_nice"),
    ("commit_every = -0.5", "mirror.commit_every"),
    ("commit_every = 61", "mirror.commit_every"),
    ("commit_every = nan", "mirror.commit_every"),
])
def test_a_bad_shadow_setting_is_one_line_naming_it_and_exit_2(tmp_path: Path, line: str,
                                                               field: str) -> None:
    config = tmp_path / "c.toml"
    config.write_text(f"[mirror]\n{line}\n")
    log = tmp_path / "m.jsonl"
    result = invoke("mirror", "--config", config, "--listen", "127.0.0.1:0", "--v1",
                    "http://127.0.0.1:9", "--v2", "http://127.0.0.1:9", "--log", log)
    assert result.exit_code == 2
    assert field in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not log.exists()
