"""Fixtures for the dashboard, report and metrics tests.

- ``known_log``: a log with known contents written by the test (rounds over two hours,
  every bucket, hostile replies, an A/A record, a halt in ``<log>.events.jsonl``);
- ``serve``: ``shadow-burnin serve`` as a real subprocess on a free loopback port
  (``url, proc``), stopped at teardown;
- ``browser``: Debian's Chromium driven by Playwright's Python API (no browser download);
  ``page_of(browser)``: a new page that records console errors and dialogs;
- ``shots``: the directory screenshots go to (kept under the temp dir, printed).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.procs import free_port as free_port  # re-exported: tests import it from here
from tests.procs import stop_process

SRC = Path(__file__).resolve().parents[2] / "src"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]

HOSTILE = [
    "<script>window.__pwned = 1; alert('xss')</script>",
    "</textarea></pre><b id=\"injected\">bold</b>",
    "\"><img src=x id=\"injected-img\" onerror=\"alert(1)\">",
    "javascript:alert(document.cookie)",
    "\x1b[31mred\x1b[0m and a NUL \x00 here",
    "<svg onload=\"alert(2)\"><a href=\"javascript:alert(3)\">click</a></svg>",
]
T0 = 1_795_000_000  # 2026-11-18T...; rounds every 30 s


def stamp(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def side(text: str | None, latency: float | None, error: str | None = None) -> dict[str, Any]:
    return {"text": text, "latency_ms": latency, "ttft_ms": None if latency is None else
            round(latency / 10, 3), "status": 200 if error is None else None,
            "finish_reason": "stop" if error is None else None,
            "completion_tokens": None if text is None else 5, "error": error}


def round_record(n: int, bucket: str, t1: str | None, t2: str | None, *, t: float,
                 category: str, lat1: float = 100.0, lat2: float = 120.0,
                 **extra: Any) -> dict[str, Any]:
    div = None
    pm = None
    if t1 is not None and t2 is not None:
        b1, b2 = t1.encode(), t2.encode()
        k = next((i for i, (x, y) in enumerate(zip(b1, b2, strict=False)) if x != y),
                 min(len(b1), len(b2)))
        div = None if b1 == b2 else k
        pm = len(b1[:k].decode("utf-8", "ignore"))
    s1 = side(t1, lat1 if bucket not in ("v1-unreachable", "both-unreachable") else 2.0,
              None if bucket not in ("v1-unreachable", "both-unreachable")
              else "connection-refused: Connection refused")
    s2 = side(t2, lat2 if bucket not in ("v2-unreachable", "both-unreachable") else 3.0,
              None if bucket not in ("v2-unreachable", "both-unreachable")
              else "http-503: Service Unavailable")
    rec = {"schema": 1, "round": n, "ts": stamp(t), "prompt_id": f"{category}-{n % 4}",
           "category": category, "bucket": bucket, "divergence_byte": div,
           "prefix_match_chars": pm, "v1": s1, "v2": s2, "setup": "abc", "seed": 1,
           "cursor": n - 1}
    rec.update(extra)
    return rec


@dataclass
class KnownLog:
    path: Path
    records: list[dict[str, Any]] = field(default_factory=list)
    hostile_rounds: list[int] = field(default_factory=list)

    def append(self, records: list[dict[str, Any]]) -> None:
        with open(self.path, "ab") as fh:
            fh.write(b"".join(orjson.dumps(r) + b"\n" for r in records))
        self.records.extend(records)

    def rounds(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("kind", "round") == "round"]

    def next_round(self, bucket: str = "exact", text: str = "ok") -> dict[str, Any]:
        last = self.rounds()[-1]
        n = last["round"] + 1
        other = text if bucket == "exact" else text + " but different"
        return round_record(n, bucket, text, other, t=T0 + 30 * n, category="live")


def build_known_log(path: Path) -> KnownLog:
    """120 rounds over an hour: mostly exact, some divergent, some unreachable, the
    hostile replies as no-match rounds; one A/A record; a halt event."""
    log = KnownLog(path)
    recs: list[dict[str, Any]] = []
    cats = ("code", "math", "prose")
    for n in range(1, 121):
        t = T0 + 30 * n
        cat = cats[n % 3]
        lat1, lat2 = 80.0 + (n * 7) % 50, 90.0 + (n * 11) % 70
        base = f"Answer {n}: the capital of France is Paris."
        if n % 10 == 0:
            i = len(log.hostile_rounds) % len(HOSTILE)
            rec = round_record(n, "no-match", base, HOSTILE[i], t=t, category=cat,
                               lat1=lat1, lat2=lat2,
                               forensics={"verdict": "regression", "divergence_token": 1,
                                          "swing": 0.7, "a": "Answer", "b": HOSTILE[i],
                                          "tokens": {
                                              "v1": [{"i": 0, "t": "", "lp": -0.01,
                                                      "top": []},
                                                     {"i": 1, "t": "Answer", "lp": -0.2,
                                                      "top": [["Answer", -0.2],
                                                              [HOSTILE[i], -1.9]]}],
                                              "v2": [{"i": 1, "t": HOSTILE[i], "lp": -0.1,
                                                      "top": [[HOSTILE[i], -0.1]]}]}},
                               refire={"outcome": "reproducible", "n": 1})
            log.hostile_rounds.append(n)
        elif n % 7 == 0:
            rec = round_record(n, "prefix-only", base, base + " And more.", t=t,
                               category=cat, lat1=lat1, lat2=lat2)
        elif n % 23 == 0:
            rec = round_record(n, "v2-unreachable", base, None, t=t, category=cat,
                               lat1=lat1)
        elif n == 61:
            rec = round_record(n, "v1-unreachable", None, base, t=t, category=cat, lat2=lat2)
        else:
            rec = round_record(n, "exact", base, base, t=t, category=cat, lat1=lat1,
                               lat2=lat2)
        recs.append(rec)
        if n == 50:
            recs.append({"kind": "aa", "schema": 1, "round": 50, "ts": stamp(t),
                         "prompt_id": rec["prompt_id"], "category": cat, "target": "v1",
                         "bucket": "exact", "divergence_byte": None,
                         "prefix_match_chars": 10, "a": rec["v1"], "b": rec["v1"]})
    log.append(recs)
    events = path.with_name(path.name + ".events.jsonl")
    events.write_bytes(orjson.dumps({"kind": "event", "event": "halt", "ts": stamp(T0 + 1800),
                                     "round": 60, "reason": "no-match rate 12 % > 5 %"})
                       + b"\n")
    return log


@pytest.fixture
def known_log(tmp_path: Path) -> KnownLog:
    return build_known_log(tmp_path / "burnin.jsonl")


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def wait_http(url: str, proc: subprocess.Popen[bytes], tries: int = 200) -> None:
    import urllib.error
    import urllib.request

    for _ in range(tries):
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise AssertionError(f"serve exited: {err}")
        try:
            with urllib.request.urlopen(url + "/static/style.css", timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.05)  # polling a condition with a bounded number of tries
    raise AssertionError("serve did not start")


def start_serve(log: Path, *args: str, env: dict[str, str] | None = None
                ) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "shadow_burnin", "serve", "--log", str(log), "--port", str(port),
         *args], env=env or child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    wait_http(url, proc)
    return url, proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    stop_process(proc)


@pytest.fixture
def serve(known_log: KnownLog) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    url, proc = start_serve(known_log.path)
    try:
        yield url, proc
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Module-scoped: Playwright's sync API keeps an event loop running in this thread
    while it is open, which later tests that call ``asyncio.run`` must not inherit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@dataclass
class Watched:
    page: Any
    console_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)


def page_of(browser: Any, *, offline: bool = False) -> Watched:
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    w = Watched(page)
    page.on("console", lambda m: w.console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: w.page_errors.append(str(e)))

    def on_dialog(d: Any) -> None:
        w.dialogs.append(d.message)
        d.dismiss()

    page.on("dialog", on_dialog)
    if offline:
        ctx.route("**/*", lambda route: route.abort()
                  if not route.request.url.startswith("file://") else route.continue_())
    return w


@pytest.fixture(scope="session")
def shots() -> Path:
    d = Path(tempfile.gettempdir()) / "shadow-burnin-screenshots"
    d.mkdir(exist_ok=True)
    return d
