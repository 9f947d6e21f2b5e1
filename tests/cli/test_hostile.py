"""Hostile input, beside test_bad_input.py: special files, size caps, numbers that
overflow, invalid URLs, output paths that point at the evidence, empty windows, and
strings from data that try to inject terminal or Markdown. Each case: exit 2 with one
line on stderr (or, for injection, the string shown literally), nothing lost.

Cases that could hang (a FIFO) run the CLI in a child with a timeout, so a regression
fails the test instead of hanging the suite.
"""

from __future__ import annotations

import hashlib
import os
import resource
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from shadow_burnin.io.log.events import append_event, events_path
from tests.cli.conftest import invoke, write_prompts
from tests.cli.test_bad_input import assert_untouched, one_line, run_args

HUGE = "99999999999999999999"


def tree(root: Path) -> dict[str, str]:
    """test_bad_input.tree, but a FIFO or socket is listed, never read (it would block)."""
    out = {}
    for p in sorted(root.rglob("*")):
        key = str(p.relative_to(root))
        if p.is_dir():
            out[key] = "dir"
        elif p.is_file():
            out[key] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[key] = "special"
    return out


def _cap_memory() -> None:
    """In the child: at most 2 GiB of address space, so a regression that reads
    /dev/zero fails fast instead of eating the machine's memory."""
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))


def cli(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shadow_burnin", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, PYTHONUNBUFFERED="1"), preexec_fn=_cap_memory)


def rnd(n: int, bucket: str = "exact", *, prompt: str = "p1", category: str = "c",
        t1: str = "same text", t2: str | None = None, tokens: int | None = 3) -> dict:
    def side(text: str) -> dict:
        return {"text": text, "latency_ms": 100.0, "ttft_ms": 10.0, "status": 200,
                "finish_reason": "stop", "completion_tokens": tokens, "error": None}
    t2 = t1 if t2 is None else t2
    return {"schema": 1, "round": n, "ts": f"2026-04-20T00:00:{n:02d}.000Z",
            "prompt_id": prompt, "category": category, "bucket": bucket,
            "divergence_byte": None if bucket == "exact" else 0,
            "prefix_match_chars": None if bucket == "exact" else 0,
            "v1": side(t1), "v2": side(t2)}


def write_log(path: Path, records: list[dict]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records))
    return path


# -- special files -------------------------------------------------------------------
@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "pipe"
    os.mkfifo(path)
    return path


READERS = {
    "config": lambda p, tmp: ["config", "--config", p],
    "prompts": lambda p, tmp: ["prompts", "--prompts", p],
    "run-prompts": lambda p, tmp: run_args(tmp, "--prompts", p, "--log", tmp / "b.jsonl"),
    "run-config": lambda p, tmp: run_args(tmp, "--config", p, "--log", tmp / "b.jsonl"),
    "run-state": lambda p, tmp: run_args(tmp, "--state", p, "--log", tmp / "b.jsonl"),
    "run-log": lambda p, tmp: run_args(tmp, "--log", p),
    "bench": lambda p, tmp: ["bench", "--log", p],
    "recent": lambda p, tmp: ["recent", "--log", p],
    "show": lambda p, tmp: ["show", "1", "--log", p],
    "divergences": lambda p, tmp: ["divergences", "--log", p],
    "gates": lambda p, tmp: ["gates", "--log", p],
    "ack-halt": lambda p, tmp: ["ack-halt", "--log", p, "--reason", "x"],
}


@pytest.mark.parametrize("where", list(READERS))
def test_fifo_is_refused_not_waited_on(tmp_path: Path, fifo: Path, where: str) -> None:
    before = tree(tmp_path)
    proc = cli(*READERS[where](fifo, tmp_path))
    assert proc.returncode == 2, proc.stderr
    one_line(proc.stderr, [str(fifo), "FIFO"])
    assert_untouched(before, tree(tmp_path))


@pytest.mark.parametrize("where", ["config", "prompts", "run-prompts", "bench", "recent",
                                   "gates", "run-log"])
def test_dev_zero_is_refused_without_reading(tmp_path: Path, where: str) -> None:
    lock = Path("/dev/zero.lock")

    def seen() -> float | None:  # (an older version may have left one: compare, not assume)
        return lock.stat().st_mtime_ns if lock.exists() else None

    before = seen()
    proc = cli(*READERS[where](Path("/dev/zero"), tmp_path))
    assert proc.returncode == 2, proc.stderr
    one_line(proc.stderr, ["/dev/zero", "character device"])
    assert seen() == before  # validated before any side file: no lock created or touched


def test_socket_is_refused(tmp_path: Path) -> None:
    import socket

    path = tmp_path / "sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
        res = invoke("bench", "--log", path)
    assert res.exit_code == 2
    one_line(res.stderr, [str(path), "socket"])


def test_config_over_the_cap_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "c.toml"
    big.write_bytes(b"# " + b"x" * (1024 * 1024) + b"\n")
    res = invoke("config", "--config", big)
    assert res.exit_code == 2
    one_line(res.stderr, [str(big), "larger than 1 MiB"])


def test_million_line_prompts_file_still_works(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    with path.open("wb") as fh:
        for i in range(1_000_000):
            fh.write(b'{"id":"p%d","category":"c%d","prompt":"q %d"}\n' % (i, i % 4, i))
    res = invoke("prompts", "--prompts", path)
    assert res.exit_code == 0, res.stderr
    assert "1000000 prompts in 4 categories" in res.stdout


# -- numbers that overflow, URLs that cannot work ---------------------------------------
@pytest.mark.parametrize("argv", [
    ["run", "--max-tokens", HUGE],
    ["run", "--rounds", HUGE],
    ["run", "--seed", HUGE],
    ["run", "--concurrency", HUGE],
    ["recent", "-n", HUGE],
    ["divergences", "--limit", HUGE],
    ["show", HUGE],
    ["ppl", "--window", HUGE],
    ["run", "--timeout", "inf"],
    ["run", "--interval", "nan"],
])
def test_huge_numbers_one_line(tmp_path: Path, argv: list[str]) -> None:
    log = write_log(tmp_path / "b.jsonl", [rnd(1)])
    before = tree(tmp_path)
    res = invoke(*argv, "--log", log)
    assert res.exit_code == 2, res.output
    one_line(res.stderr, [])
    assert "Traceback" not in res.output
    assert_untouched(before, tree(tmp_path))


def test_huge_max_tokens_in_prompts_file_refused_at_load(tmp_path: Path) -> None:
    p = tmp_path / "p.jsonl"
    p.write_text('{"id":"a","category":"c","prompt":"x","max_tokens":' + HUGE + '}\n')
    for argv in (["prompts", "--prompts", p],
                 run_args(tmp_path, "--prompts", p, "--log", tmp_path / "b.jsonl")):
        res = invoke(*argv)
        assert res.exit_code == 2
        one_line(res.stderr, [f"{p}:1", "max_tokens"])
    assert not (tmp_path / "b.jsonl").exists()  # refused before the run began


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999", "http://127.0.0.1:8080garbage",
                                 "http://:8080", "http://127.0.0.1:8080/ x",
                                 "http://u:pw@127.0.0.1:8080"])
def test_bad_urls_refused_up_front(tmp_path: Path, url: str) -> None:
    res = invoke(*run_args(tmp_path, "--log", tmp_path / "b.jsonl", "--v2", url))
    assert res.exit_code == 2
    line = one_line(res.stderr, ["v2.url"])
    assert "pw@" not in line
    assert not (tmp_path / "b.jsonl").exists()


# -- output paths ------------------------------------------------------------------------
@pytest.fixture
def evidence(tmp_path: Path) -> Path:
    log = write_log(tmp_path / "b.jsonl", [rnd(i) for i in range(1, 35)])
    (tmp_path / "b.state").write_text("{}")
    (tmp_path / "b.jsonl.lock").write_text("")
    append_event(log, {"event": "note", "ts": "2026-04-20T00:00:01.000Z"})
    (tmp_path / "c.toml").write_text("[request]\nmax_tokens = 8\n")
    (tmp_path / "notes.md").write_text("my own notes\n")
    return log


@pytest.mark.parametrize("target", ["b.jsonl", "b.state", "b.jsonl.lock",
                                    "b.jsonl.events.jsonl", "b.ppl.jsonl", "b.jsonl.idx",
                                    "c.toml", "notes.md", "."])
def test_gates_write_refuses_the_evidence(tmp_path: Path, evidence: Path, target: str) -> None:
    before = tree(tmp_path)
    res = invoke("gates", "--log", evidence, "--config", tmp_path / "c.toml", "--write",
                 tmp_path / target)
    assert res.exit_code == 2, res.output
    one_line(res.stderr, ["refusing"] if target != "." else [])
    assert_untouched(before, tree(tmp_path))
    assert len(evidence.read_bytes().splitlines()) == 34  # every round still there


def test_gates_write_overwrites_only_its_own_file(tmp_path: Path, evidence: Path) -> None:
    out = tmp_path / "CUTOVER.md"
    first = invoke("gates", "--log", evidence, "--write", out)
    assert first.exit_code in (0, 1, 3) and out.read_text().startswith("<!-- shadow-burnin:")
    again = invoke("gates", "--log", evidence, "--write", out)
    assert again.exit_code == first.exit_code  # marked by us: replaced (atomically)
    assert not list(tmp_path.glob(".CUTOVER.md.*"))  # no temp file left behind


def test_import_legacy_refuses_to_write_over_inputs(tmp_path: Path) -> None:
    src = Path(__file__).parent.parent / "fixtures" / "legacy"
    legacy_log = next(src.glob("*.jsonl"))
    cfg = tmp_path / "c.toml"
    cfg.write_text("[request]\nmax_tokens = 8\n")
    before = tree(tmp_path)
    for argv in (["--log", tmp_path / "x.jsonl", "--state", tmp_path / "x.jsonl"],
                 ["--log", tmp_path / "x.jsonl", "--state", tmp_path / "x.jsonl.lock"],
                 ["--log", cfg, "--config", cfg],
                 ["--log", tmp_path / "x.jsonl", "--state", cfg, "--config", cfg]):
        res = invoke("import-legacy", legacy_log, *argv)
        assert res.exit_code == 2, res.output
        one_line(res.stderr, [])
        assert_untouched(before, tree(tmp_path))


def test_run_refuses_state_that_is_the_log_or_a_side_file(tmp_path: Path) -> None:
    log = write_log(tmp_path / "b.jsonl", [rnd(1)])
    before = tree(tmp_path)
    for state in (log, tmp_path / "b.jsonl.lock", events_path(log)):
        res = invoke(*run_args(tmp_path, "--log", log, "--state", state))
        assert res.exit_code == 2
        one_line(res.stderr, [str(state)])
        assert_untouched(before, tree(tmp_path))


# -- windows -------------------------------------------------------------------------------
@pytest.mark.parametrize(("since", "until", "want"), [
    ("", None, "--since: empty"),
    (None, " ", "--until: empty"),
    ("2026-04-21T00:00:00Z", "2026-04-20T00:00:00Z", "--since must be before --until"),
    ("2026-04-20T00:00:00Z", "2026-04-20T00:00:00Z", "--since must be before --until"),
])
@pytest.mark.parametrize("command", ["bench", "divergences", "gates"])
def test_empty_or_inverted_window_refused(tmp_path: Path, command: str, since: str | None,
                                          until: str | None, want: str) -> None:
    log = write_log(tmp_path / "b.jsonl", [rnd(1)])
    argv: list[str | Path] = [command, "--log", log]
    if since is not None:
        argv += ["--since", since]
    if until is not None:
        argv += ["--until", until]
    res = invoke(*argv)
    assert res.exit_code == 2
    one_line(res.stderr, [want])


# -- injection -------------------------------------------------------------------------------
RICH = "[bold red]PID[/]"
LINK = "[link=file:///etc/passwd]click[/link]"
RAW = "\x1b]0;PWNED\x07\x1b[2J"


@pytest.fixture
def hostile_log(tmp_path: Path) -> Path:
    return write_log(tmp_path / "h.jsonl", [
        rnd(1, "no-match", prompt=RICH, category=LINK, t1="a", t2="b"),
        rnd(2, "no-match", prompt=f"p{RAW}", category=f"c{RAW}", t1="a", t2=f"b{RAW}"),
        rnd(3, "exact", prompt=RICH, category=LINK),
    ])


@pytest.mark.parametrize("argv", [["bench"], ["recent"], ["show", "1"], ["show", "2"],
                                  ["divergences"], ["gates"]])
def test_data_is_shown_literally(hostile_log: Path, argv: list[str]) -> None:
    res = invoke(*argv, "--log", hostile_log)
    out = res.stdout
    assert "\x1b" not in out and "\x07" not in out  # no raw escape reaches the terminal
    assert "]8;" not in out  # no OSC-8 hyperlink
    if argv[0] in ("bench", "recent", "divergences") or argv == ["show", "1"]:
        assert RICH in out.replace("\n", "") or "[bold red]PID[/]" in out
    if argv == ["show", "2"]:
        assert "⟨U+001B⟩" in out


def test_ack_reason_cannot_inject_into_cutover_md(tmp_path: Path) -> None:
    log = write_log(tmp_path / "b.jsonl", [rnd(i) for i in range(1, 5)])
    append_event(log, {"event": "halt", "ts": "2026-04-20T00:00:02.000Z", "round": 2,
                       "action": "flag", "window": {}, "worst_prompts": []})
    reason = f"ok{RAW}<script>alert(1)</script>\n## Verdict: GO\n[x](javascript:1)"
    res = invoke("ack-halt", "--log", log, "--reason", reason)
    assert res.exit_code == 0, res.output
    assert "\x1b" not in res.stdout
    out = tmp_path / "CUTOVER.md"
    invoke("gates", "--log", log, "--write", out)
    md = out.read_text()
    assert "\x1b" not in md and "\x07" not in md
    assert "<script>" not in md and "&lt;script&gt;" in md
    assert not any(line.startswith("## Verdict") for line in md.splitlines())
    assert "](javascript" not in md


def test_halt_banner_names_the_log(tmp_path: Path) -> None:
    from rich.console import Console

    from shadow_burnin.render.gates import halt_alert

    console = Console(width=200, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(halt_alert("HALT at round 51", "/data/my burn-in.jsonl"))
    assert "ack-halt --log '/data/my burn-in.jsonl' --reason" in console.export_text()


# -- small output defects ----------------------------------------------------------------------
def test_show_prints_a_dash_not_none(tmp_path: Path) -> None:
    log = write_log(tmp_path / "b.jsonl", [rnd(1, tokens=None)])
    out = invoke("show", "1", "--log", log).stdout
    assert "None" not in out and "tokens —" in out


def test_one_round_is_singular_and_no_negative_zero(tmp_path: Path) -> None:
    log = write_log(tmp_path / "b.jsonl", [rnd(1)])
    out = invoke("recent", "--log", log).stdout
    assert "last 1 round" in out and "1 rounds" not in out
    bench = invoke("bench", "--log", log).stdout
    assert "-0.0" not in bench


def test_run_prints_its_final_line_once(tmp_path: Path) -> None:
    p = write_prompts(tmp_path / "p.jsonl")
    argv = [a for a in run_args(tmp_path, "--prompts", p, "--log", tmp_path / "b.jsonl")
            if a != "--quiet"]
    res = invoke(*argv)
    assert res.exit_code == 0, res.output
    said = (res.stdout + res.stderr).splitlines()
    assert [ln for ln in said if "reached 1 round" in ln] == [
        f"1 round logged to {tmp_path / 'b.jsonl'} (reached 1 round)"]


def test_echoed_bearer_token_redacted_in_recent_and_show(tmp_path: Path) -> None:
    """A log written before the client redacted server echoes still shows no key."""
    rec = rnd(1, "v2-unreachable")
    rec["v2"] = {**rec["v2"], "text": None, "error": "http-429: retry-after Bearer sk-live-XYZ9"}
    log = write_log(tmp_path / "b.jsonl", [rec])
    for argv in (["recent"], ["show", "1"]):
        res = invoke(*argv, "--log", log, env={"K": "sk-live-XYZ9"})
        assert res.exit_code == 0, res.output
        assert "sk-live-XYZ9" not in res.stdout and "[redacted]" in res.stdout


def test_config_output_carries_no_raw_escape(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[v1]\nmodel = "m\\u001b]0;PWNED\\u0007\\u001b[2J"\n')
    res = invoke("config", "--config", cfg)
    assert res.exit_code == 0, res.output
    assert "\x1b" not in res.stdout and "\x07" not in res.stdout
    assert "PWNED" in res.stdout  # shown, as a TOML escape
