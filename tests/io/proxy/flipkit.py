"""Shared setup of the cutover tests: a burn-in log whose gates are green (or red), a
prompts file, and a config pointing at two scripted servers and a real Caddy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from shadow_burnin.core.records import Round, SideReply
from tests.servers.scripted import echo_reply

SALT = " [v2 says it differently]"
TELL_ID = "tell"
TELL_PROMPT = "Which server are you?"


def v1_text(prompt: str) -> str:
    return echo_reply({"messages": [{"role": "user", "content": prompt}]})


def v2_text(prompt: str) -> str:
    return v1_text(prompt) + SALT


def write_prompts(path: Path) -> Path:
    lines = [orjson.dumps({"id": f"p{i}", "category": "c", "prompt": f"question {i}"})
             for i in range(4)]
    lines.append(orjson.dumps({"id": TELL_ID, "category": "c", "prompt": TELL_PROMPT}))
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _side(text: str, ms: float) -> SideReply:
    return SideReply(text=text, latency_ms=ms, ttft_ms=ms / 2, status=200,
                     finish_reason="stop", completion_tokens=len(text.split()))


def write_log(path: Path, *, exact: int = 40, tell: int = 2, no_match: int = 0) -> Path:
    """``exact`` identical rounds, ``tell`` rounds of the tell-apart prompt (v1 and v2
    reply as the scripted pair does), ``no_match`` other divergent rounds."""
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    rows: list[dict[str, Any]] = []
    n = 0

    def add(pid: str, bucket: str, a: str, b: str) -> None:
        nonlocal n
        n += 1
        ts = (t0 + timedelta(seconds=10 * n)).isoformat().replace("+00:00", "Z")
        div = None if a == b else next((i for i, (x, y) in enumerate(zip(a, b, strict=False))
                                        if x != y), min(len(a), len(b)))
        rows.append(Round(n, ts, pid, "c", bucket, div, div, _side(a, 50.0 + n % 7),
                          _side(b, 52.0 + n % 5)).to_json())

    for i in range(exact):
        text = v1_text(f"question {i % 4}")
        add(f"p{i % 4}", "exact", text, text)
    for _ in range(tell):
        add(TELL_ID, "prefix-only", v1_text(TELL_PROMPT), v2_text(TELL_PROMPT))
    for i in range(no_match):
        add(f"p{i % 4}", "no-match", "completely", "different")
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


def write_config(path: Path, *, v1: str, v2: str, log: Path, prompts: Path, admin: str,
                 cutover: dict[str, Any] | None = None, request_api: str = "chat") -> Path:
    """Gates that a short test log can pass: no ppl run, no 72 h, few rounds."""
    cut = {"caddy": admin, **(cutover or {})}
    lines = [
        f'[v1]\nurl = "{v1}"\n', f'[v2]\nurl = "{v2}"\n',
        f'[request]\napi = "{request_api}"\nmax_tokens = 32\n',
        f'[run]\nprompts = "{prompts}"\n',
        f'[paths]\nlog = "{log}"\n',
        "[gates.ppl]\nenabled = false\n", "[gates.wall_time]\nenabled = false\n",
        "[gates.rounds]\ntarget = 20\n", "[gates.prefix_match]\nenabled = false\n",
        "[cutover]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in cut.items()),
    ]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def read_events(log: Path) -> list[dict[str, Any]]:
    path = log.with_name(log.name + ".events.jsonl")
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
