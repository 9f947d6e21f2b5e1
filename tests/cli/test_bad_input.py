"""Bad input: every wrong file or value is exit 2 with exactly one line on stderr naming the
file (and the line or field where there is one), and nothing is written.

"Nothing written" is checked by hashing every file and listing every directory under the
test's tmp dir before and after. The one thing allowed to appear is an empty ``*.lock``
file beside the log (``run`` takes its lock before it reads the log and the state).

Permission cases: we run as root, which ignores permission bits, so those commands run in
a child whose capability bounding set lacks CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH
(prctl PR_CAPBSET_DROP before exec): still uid 0, but bound by the bits like anyone else.
(``setuid(nobody)`` cannot work here: the interpreter lives under /root, mode 0700.)
"""

from __future__ import annotations

import ctypes
import hashlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from shadow_burnin.io.log.store import Store
from tests.cli.conftest import invoke, write_prompts
from tests.io.log.test_store import record

DEAD = "http://127.0.0.1:9"  # nothing listens: a run that got this far ends at once
PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 24, 1, 2


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): "dir" if p.is_dir() else
            hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))}


def assert_untouched(before: dict[str, str], after: dict[str, str]) -> None:
    empty = hashlib.sha256(b"").hexdigest()
    assert {k: after.get(k) for k in before} == before, "a file was changed or removed"
    new = {k: v for k, v in after.items() if k not in before}
    assert all(k.endswith(".lock") and v == empty for k, v in new.items()), new


def run_args(tmp: Path, *extra: str | Path) -> list[str]:
    return ["run", "--v1", DEAD, "--v2", DEAD, "--rounds", "1", "--interval", "0", "--quiet",
            *(str(x) for x in extra)]


def logged(tmp: Path, setup: str = "feedfacefeedface", n: int = 3) -> Path:
    """A valid log + state of ``n`` rounds written by the store (setup ``setup``)."""
    log = tmp / "b.jsonl"
    with Store(log, tmp / "b.state") as store:
        for i in range(1, n + 1):
            store.append({**record(i), "setup": setup})
    return log


def write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


Setup = Callable[[Path], tuple[list[str], list[str]]]  # tmp -> (argv, must be in the line)


def _toml(text: str, *want: str) -> Setup:
    def setup(tmp: Path) -> tuple[list[str], list[str]]:
        cfg = write(tmp / "c.toml", text)
        return ["config", "--config", str(cfg)], [str(cfg), *want]
    return setup


def _run_cfg(text: str, *want: str) -> Setup:
    def setup(tmp: Path) -> tuple[list[str], list[str]]:
        cfg = write(tmp / "c.toml", text)
        return run_args(tmp, "--config", cfg, "--log", tmp / "b.jsonl"), [str(cfg), *want]
    return setup


def _prompts(data: str, *want: str) -> Setup:
    def setup(tmp: Path) -> tuple[list[str], list[str]]:
        p = write(tmp / "p.jsonl", data)
        return run_args(tmp, "--prompts", p, "--log", tmp / "b.jsonl"), [*want]
    return setup


def _foreign_log(data: str, command: str, *want: str) -> Setup:
    def setup(tmp: Path) -> tuple[list[str], list[str]]:
        log = write(tmp / "b.jsonl", data)
        argv = run_args(tmp) if command == "run" else ["bench"]
        return [*argv, "--log", str(log)], [*want]
    return setup


def _state(data: str | None, *want: str) -> Setup:
    def setup(tmp: Path) -> tuple[list[str], list[str]]:
        log = logged(tmp)
        if data is not None:
            write(tmp / "b.state", data)
        p = write_prompts(tmp / "p.jsonl")
        return run_args(tmp, "--log", log, "--prompts", p), [str(tmp / "b.state"), *want]
    return setup


def _dir(where: str) -> Setup:
    def setup(tmp: Path) -> tuple[list[str], list[str]]:
        d = tmp / "d"
        d.mkdir()
        argv = {"config": ["config", "--config", str(d)],
                "prompts": run_args(tmp, "--prompts", d, "--log", tmp / "b.jsonl"),
                "log": run_args(tmp, "--log", d),
                "bench-log": ["bench", "--log", str(d)],
                "state": run_args(tmp, "--log", tmp / "b.jsonl", "--state", d)}[where]
        return argv, [str(d), "directory"]
    return setup


def _under_file(tmp: Path) -> tuple[list[str], list[str]]:
    f = write(tmp / "notes.txt", "x")
    return run_args(tmp, "--log", f / "b.jsonl"), [str(f / "b.jsonl"), "a parent is a file"]


CASES: dict[str, Setup] = {
    "toml-malformed": _toml("[v1\nurl = 'http://a'\n", "invalid TOML", "line 1"),
    "toml-malformed-run": _run_cfg("[request]\nmax_tokens = = 3\n", "invalid TOML", "line 2"),
    "unknown-section": _toml("[v3]\nurl = 'http://a'\n", "unknown section [v3]"),
    "unknown-key": _toml("[v1]\nurll = 'http://a'\n", "unknown key v1.urll"),
    "wrong-type": _toml("[request]\nmax_tokens = '64'\n", "request.max_tokens", "integer"),
    "wrong-type-run": _run_cfg("[run]\nconcurrency = true\n", "run.concurrency"),
    "url-no-scheme": _toml("[v1]\nurl = 'localhost:8080'\n", "v1.url", "http://"),
    "url-no-scheme-flag": lambda tmp: (
        run_args(tmp, "--v2", "127.0.0.1:8180", "--log", tmp / "b.jsonl"),
        ["command line", "v2.url", "127.0.0.1:8180"]),
    "prompts-bad-line": _prompts(
        '{"id":"a","category":"c","prompt":"x"}\n\n{"id":"b","category":"c","prompt":}\n'
        '{"id":"c","category":"c","prompt":"z"}\n', "p.jsonl:3:"),
    "prompts-bad-field": _prompts('{"id":"a","category":"c","prompt":"x"}\n'
                                  '{"id":"b","category":"c","prompt":42}\n', "p.jsonl:2:",
                                  "prompt"),
    "prompts-empty": _prompts("", "p.jsonl", "no prompts"),
    "state-other-setup": _state(None, "different setup"),
    "state-corrupt": _state('{"schema": 1, "last_round": 3, "cou', "corrupt"),
    "state-wrong-fields": _state('{"schema": 1, "last_round": "three"}', "corrupt"),
    "state-not-ours": _state('[1, 2, 3]\n', "not a shadow-burnin state"),
    "log-not-ours-run": _foreign_log('{"hello": "world"}\n', "run", "b.jsonl:1",
                                     "not a shadow-burnin"),
    "log-csv-run": _foreign_log("a,b\n1,2", "run", "b.jsonl:1", "not JSON"),
    "log-text-run": _foreign_log("just some text", "run", "b.jsonl:1", "not JSON"),
    "log-not-ours-bench": _foreign_log('{"hello": "world"}\n', "bench", "b.jsonl:1",
                                       "not a shadow-burnin"),
    "log-csv-bench": _foreign_log("a,b\n1,2\n", "bench", "b.jsonl:1", "not JSON"),
    "dir-as-config": _dir("config"),
    "dir-as-prompts": _dir("prompts"),
    "dir-as-log": _dir("log"),
    "dir-as-log-bench": _dir("bench-log"),
    "dir-as-state": _dir("state"),
    "log-under-a-file": _under_file,
}


def one_line(stderr: str, want: list[str]) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("shadow-burnin: error: "), stderr
    assert all(w in lines[0] for w in want), (want, lines[0])
    return lines[0]


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(tmp_path: Path, case: str) -> None:
    argv, want = CASES[case](tmp_path)
    before = tree(tmp_path)
    res = invoke(*argv)
    assert res.exit_code == 2, (res.stdout, res.stderr)
    one_line(res.stderr, want)
    assert res.stdout == ""
    assert_untouched(before, tree(tmp_path))


def drop_dac() -> None:
    """In the child, before exec: lose CAP_DAC_OVERRIDE/READ_SEARCH for good."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _perm(target: str, mode: int) -> Setup:
    def setup(tmp: Path) -> tuple[list[str], list[str]]:
        p = write_prompts(tmp / "p.jsonl")
        cfg = write(tmp / "c.toml", "[request]\nmax_tokens = 8\n")
        log = logged(tmp, n=2)
        argv = {"config": ["config", "--config", str(cfg)],
                "prompts": run_args(tmp, "--prompts", p, "--log", log),
                "log": run_args(tmp, "--prompts", p, "--log", log),
                "bench-log": ["bench", "--log", str(log)],
                "state": run_args(tmp, "--prompts", p, "--log", log),
                "log-dir": run_args(tmp, "--prompts", p, "--log", tmp / "ro" / "b.jsonl")}
        path = {"config": cfg, "prompts": p, "log": log, "bench-log": log,
                "state": tmp / "b.state", "log-dir": tmp / "ro"}[target]
        if target == "log-dir":
            path.mkdir()
        path.chmod(mode)
        return argv[target], [str(path), "permission denied"]
    return setup


PERM_CASES: dict[str, Setup] = {
    "unreadable-config": _perm("config", 0o000),
    "unreadable-prompts": _perm("prompts", 0o000),
    "unreadable-log-run": _perm("log", 0o000),
    "unreadable-log-bench": _perm("bench-log", 0o000),
    "unreadable-state": _perm("state", 0o000),
    "read-only-log": _perm("log", 0o444),
    "read-only-log-dir": _perm("log-dir", 0o555),
}


@pytest.mark.parametrize("case", list(PERM_CASES))
def test_permission_denied(tmp_path: Path, case: str) -> None:
    argv, want = PERM_CASES[case](tmp_path)
    before = tree(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "shadow_burnin", *argv], capture_output=True,
                          preexec_fn=drop_dac, timeout=120)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.decode()
    one_line(err, want)
    assert_untouched(before, tree(tmp_path))


def test_permission_mechanism_is_real(tmp_path: Path) -> None:
    """The child really is bound by the permission bits (else the cases above prove little)."""
    secret = write(tmp_path / "s", "x")
    secret.chmod(0o000)
    probe = [sys.executable, "-c", f"open({str(secret)!r}).read()"]
    assert subprocess.run(probe, capture_output=True).returncode == 0  # root reads it ...
    denied = subprocess.run(probe, capture_output=True, preexec_fn=drop_dac)
    assert denied.returncode == 1 and b"PermissionError" in denied.stderr  # ... the child not

