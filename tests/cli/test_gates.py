"""`gates`, `ppl` and the gate table in `bench`, through the CLI."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest

from shadow_burnin.core.timefmt import iso_ms as iso
from tests.cli.conftest import invoke
from tests.servers.fakelm import FakeLM, serve_in_thread

T0 = 1_800_000_000.0


def side(latency: float) -> dict:
    return {"text": "same", "latency_ms": latency, "ttft_ms": None, "status": 200,
            "finish_reason": "stop", "completion_tokens": 1, "error": None}


def write_log(path: Path, buckets: list[str], step_s: float = 60.0,
              gap_ms: float = 20.0) -> Path:
    rows = []
    for i, b in enumerate(buckets, 1):
        rows.append({"schema": 1, "round": i, "ts": iso(T0 + i * step_s), "prompt_id": f"p{i % 5}",
                     "category": "c", "bucket": b, "divergence_byte": None if b == "exact" else 50,
                     "prefix_match_chars": None if b == "exact" else 50,
                     "v1": side(100.0 + i % 7), "v2": side(100.0 + gap_ms + i % 7)})
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


def write_config(path: Path, extra: str = "") -> Path:
    path.write_text(f"""
[gates.rounds]
target = 100
[gates.wall_time]
target = 1
{extra}
""")
    return path


def write_ppl(log: Path, v1: float, v2: float) -> None:
    record = {"kind": "ppl", "ts": iso(T0 + 1), "text": {"name": "t"}, "window": 1024,
              "top_k": 10, "windows": 1, "v1": {"method": "llama", "ppl": v1, "tokens": 1023},
              "v2": {"method": "echo", "ppl": v2, "tokens": 1023}, "paired": None}
    log.with_name(log.stem + ".ppl.jsonl").write_bytes(orjson.dumps(record) + b"\n")


def gates_json(*args: str | Path) -> tuple[int, dict]:
    res = invoke("gates", "--json", *args)
    return res.exit_code, orjson.loads(res.stdout)


def states(report: dict) -> dict[str, str]:
    return {g["gate"]: g["state"] for g in report["gates"]}


def test_exit_codes_green_red_waiting(tmp_path: Path) -> None:
    log = write_log(tmp_path / "b.jsonl", ["exact"] * 200)
    cfg = write_config(tmp_path / "c.toml")
    code, report = gates_json("--log", log, "--config", cfg)
    assert code == 3 and report["verdict"] == "waiting"  # only the PPL is missing
    assert states(report)["ppl"] == "waiting" and report["notes"]
    write_ppl(log, 20.00, 20.03)
    code, report = gates_json("--log", log, "--config", cfg)
    assert code == 0 and set(states(report).values()) == {"pass"}
    assert report["rounds"] == 200 and report["as_of"] == iso(T0 + 200 * 60)
    write_ppl(log, 20.00, 20.30)  # a broken v2: PPL off by 0.3
    code, report = gates_json("--log", log, "--config", cfg)
    assert code == 1 and states(report)["ppl"] == "fail"
    ppl_gate = next(g for g in report["gates"] if g["gate"] == "ppl")
    assert ppl_gate["baseline"] == 20.0 and ppl_gate["current"] == 20.3


def test_waiting_for_rounds_and_time_and_red_exact_match(tmp_path: Path) -> None:
    log = write_log(tmp_path / "b.jsonl", ["exact"] * 40 + ["no-match"] * 10, step_s=1)
    write_ppl(log, 20.0, 20.0)
    code, report = gates_json("--log", log)  # the defaults: 50 000 rounds, 72 h
    st = states(report)
    assert (st["rounds"], st["wall_time"], st["exact_match"]) == ("waiting", "waiting", "fail")
    assert code == 1 and "drift" not in st  # the drift gate is off by default
    # the figures behind: rounds and time
    exact = next(g for g in report["gates"] if g["gate"] == "exact_match")
    assert exact["samples"] == 50 and exact["as_of"] == iso(T0 + 50)


def test_statistical_mode_and_determinism(tmp_path: Path) -> None:
    # 93 % exact over 150 rounds: the point passes 90 %, the Wilson lower bound does not
    log = write_log(tmp_path / "b.jsonl", (["exact"] * 14 + ["no-match"]) * 10)
    write_ppl(log, 20.0, 20.0)
    cfg = write_config(tmp_path / "c.toml")
    code, plain = gates_json("--log", log, "--config", cfg)
    assert code == 0 and states(plain)["exact_match"] == "pass"
    code, stat = gates_json("--log", log, "--config", cfg, "--statistical")
    assert code == 3 and states(stat)["exact_match"] == "waiting" and stat["statistical"]
    gap = next(g for g in stat["gates"] if g["gate"] == "p95_gap")
    assert gap["state"] == "pass" and gap["interval"][1] < 100
    _, again = gates_json("--log", log, "--config", cfg, "--statistical")
    assert again == stat  # log timestamps and a seeded bootstrap: the same answer


def test_write_cutover_md_and_table(tmp_path: Path) -> None:
    log = write_log(tmp_path / "b.jsonl", ["exact"] * 150 + ["prefix-only"] * 5)
    write_ppl(log, 20.0, 20.01)
    out = tmp_path / "CUTOVER.md"
    res = invoke("gates", "--log", log, "--config", write_config(tmp_path / "c.toml"),
                 "--write", out)
    assert res.exit_code == 0, res.output
    assert "cutover gates" in res.stdout and "✓ pass" in res.stdout and "GO" in res.stdout
    md = out.read_text()
    first_line, body = md.split("\n", 1)
    assert first_line == "<!-- shadow-burnin:cutover -->"  # the marker: ours to overwrite
    shown = re.sub(r"\\(.)", r"\1", body)  # as rendered: every data cell is escaped
    assert body.startswith("# Cutover: v1 → v2") and "| exact_match | ≥ 90.00 % |" in shown
    assert "**Verdict: GO: every gate is green.**" in md and "## Perplexity" in md
    first = md
    invoke("gates", "--log", log, "--config", tmp_path / "c.toml", "--write", out)
    assert out.read_text() == first  # nothing from the clock in it


def test_custom_gate_and_config_errors(tmp_path: Path) -> None:
    log = write_log(tmp_path / "b.jsonl", ["exact"] * 150)
    write_ppl(log, 20.0, 20.0)
    cfg = write_config(tmp_path / "c.toml", '[gates.gap_tight]\nmetric = "p95_gap_ms"\n'
                       'comparator = "<"\ntarget = 5\n')
    code, report = gates_json("--log", log, "--config", cfg)
    assert code == 1 and states(report)["gap_tight"] == "fail"
    bad = tmp_path / "bad.toml"
    bad.write_text('[gates.exact_match]\ncomparator = "about"\n')
    res = invoke("gates", "--log", log, "--config", bad)
    assert res.exit_code == 2 and "gates.exact_match.comparator must be one of" in res.stderr
    assert invoke("gates", "--log", tmp_path / "none.jsonl").exit_code == 2


def test_bench_shows_gates_and_drift(tmp_path: Path) -> None:
    log = write_log(tmp_path / "b.jsonl", ["exact"] * 500)
    data = orjson.loads(invoke("bench", "--log", log, "--json").stdout)
    assert data["rounds"] == 500 and data["gates"]["verdict"] in ("waiting", "fail")
    assert data["drift"]["relative_drift_ms"] == pytest.approx(0, abs=1)
    assert data["drift"]["paired_rounds"] == 500 and len(data["drift"]["hourly"]) >= 8
    human = invoke("bench", "--log", log).stdout
    assert "cutover gates" in human and "latency drift" in human and "p95 per hour" in human


def test_ppl_command_feeds_the_gate(tmp_path: Path) -> None:
    log = write_log(tmp_path / "b.jsonl", ["exact"] * 150)
    cfg = write_config(tmp_path / "c.toml")
    text = tmp_path / "t.txt"
    text.write_text(" ".join(f"w{i}" for i in range(80)))
    with serve_in_thread(FakeLM("llama", 0.5)) as v1, serve_in_thread(FakeLM("echo", 0.5)) as v2:
        res = invoke("ppl", "--v1", v1, "--v2", v2, "--log", log, "--text", text,
                     "--window", 40, "--config", cfg)
        assert res.exit_code == 0, res.output
        assert "perplexity" in res.stdout and "same top-1" in res.stdout
        assert (tmp_path / "b.ppl.jsonl").exists()
        assert gates_json("--log", log, "--config", cfg)[0] == 0
        with serve_in_thread(FakeLM("echo", 0.45)) as broken:
            res = invoke("ppl", "--v1", v1, "--v2", broken, "--log", log, "--text", text,
                         "--window", 40, "--config", cfg, "--json")
            record = orjson.loads(res.stdout)
            assert record["v2"]["ppl"] == pytest.approx(1 / 0.45)
        code, report = gates_json("--log", log, "--config", cfg)
        assert code == 1 and states(report)["ppl"] == "fail"  # the latest run counts
    assert len((tmp_path / "b.ppl.jsonl").read_bytes().splitlines()) == 2
    dead = invoke("ppl", "--v1", "http://127.0.0.1:9", "--v2", "http://127.0.0.1:9",
                  "--log", log, "--text", text)
    # PplError is in the error tree: one line, exit 2
    assert dead.exit_code == 2 and "ppl failed: v1: /props" in dead.stderr
    assert len(dead.stderr.splitlines()) == 1


@pytest.mark.parametrize(("toml", "message"), [
    ('[halt]\naction = "pause"\n', "halt.action must be 'flag' or 'stop'"),
    ("[halt]\nthreshold = 1.5\n", "halt.threshold must be in [0, 1)"),
    ('[halt]\nwindow = "soon"\n', "halt.window: expected a duration"),
    ("[halt]\nmin_rounds = 0\n", "halt.min_rounds must be in 1.."),
    ('[halt]\nwebhook = "hooks.example"\n', "halt.webhook must be an http:// or https:// URL"),
    ("[halt]\nhalt_action = 'stop'\n", "unknown key halt.halt_action"),
    ('[ppl]\nv2_method = "magic"\n', "ppl.v2_method must be one of auto, echo, llama, endpoint"),
    ("[ppl]\nwindow = 1\n", "ppl.window must be in 2.."),
    ('[ppl]\nv1_endpoint = "ppl"\n', "ppl.v1_endpoint must be a path starting with /"),
    ("[gates]\nstatistical = 1\n", "gates.statistical must be true or false"),
    ("[gates]\nbootstrap = 0\n", "gates.bootstrap must be in 1.."),
])
def test_config_errors_name_the_key(tmp_path: Path, toml: str, message: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(toml)
    res = invoke("config", "--config", cfg)
    assert res.exit_code == 2 and message in res.stderr, res.stderr
    assert res.stderr.count("\n") == 1  # one line


def test_config_prints_the_new_sections(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[halt]\nwindow = "30m"\naction = "stop"\n[gates.drift]\nenabled = true\n')
    out = invoke("config", "--config", cfg).stdout
    assert "[gates.exact_match]" in out and 'comparator = ">="' in out
    assert "window = 1800.0" in out and 'action = "stop"' in out and "[ppl]" in out
    again = tmp_path / "again.toml"
    again.write_text(out)  # what `config` prints loads back
    assert invoke("config", "--config", again).stdout == out
