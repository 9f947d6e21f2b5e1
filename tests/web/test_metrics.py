"""``/metrics``: Prometheus text parsed with prometheus_client's parser; values equal
the log's counts, in ``serve`` and in ``run --metrics-port`` (scraped while it goes)."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from shadow_burnin.core.records import BUCKETS
from tests.cli.conftest import write_prompts
from tests.web.conftest import KnownLog, child_env, free_port, start_serve, stop

pytestmark = pytest.mark.timeout(300)


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
        text = resp.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def log_rounds(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_bytes().split(b"\n"):
        if not line.strip():
            continue
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue  # a torn last line
        if rec.get("kind", "round") == "round":
            out.append(rec)
    return out


def test_metrics_equal_the_logs_counts(serve: tuple[str, Any], known_log: KnownLog) -> None:
    url, _ = serve
    m = scrape(url)
    rounds = known_log.rounds()
    for b in BUCKETS:
        assert m[("shadow_burnin_rounds_total", (("bucket", b),))] == \
            sum(r["bucket"] == b for r in rounds)
    for side in ("v1", "v2"):
        assert m[("shadow_burnin_requests_total", (("side", side),))] == len(rounds)
        replied = [r[side]["latency_ms"] for r in rounds if r[side]["error"] is None]
        key = (("side", side),)
        assert m[("shadow_burnin_latency_seconds_count", key)] == len(replied)
        assert m[("shadow_burnin_latency_seconds_sum", key)] == pytest.approx(
            sum(replied) / 1000)
        le_100ms = sum(v <= 100 for v in replied)
        assert m[("shadow_burnin_latency_seconds_bucket", (("le", "0.1"), ("side", side)))] \
            == le_100ms
        assert m[("shadow_burnin_ttft_seconds_count", key)] == len(replied)
    refused = sum(r["bucket"] == "v1-unreachable" for r in rounds)
    http503 = sum(r["bucket"] == "v2-unreachable" for r in rounds)
    assert m[("shadow_burnin_errors_total", (("code", "connection-refused"),
                                             ("side", "v1")))] == refused == 1
    assert m[("shadow_burnin_errors_total", (("code", "http-503"), ("side", "v2")))] == \
        http503 > 0
    parity = [r for r in rounds if r["bucket"] in ("exact", "prefix-only", "no-match")]
    assert m[("shadow_burnin_exact_match_rate", ())] == pytest.approx(
        sum(r["bucket"] == "exact" for r in parity) / len(parity))
    assert m[("shadow_burnin_halt_active", ())] == 1.0  # the halt in <log>.events.jsonl
    assert m[("shadow_burnin_gate_state", (("gate", "halt"), ("state", "fail")))] == 1.0
    assert m[("shadow_burnin_gate_state", (("gate", "rounds"), ("state", "waiting")))] == 1.0
    assert m[("shadow_burnin_log_readable", ())] == 1.0
    # a restart changes nothing: totals come from the log
    more = [known_log.next_round("exact") for _ in range(1)]
    known_log.append(more)
    m2 = scrape(url)
    assert m2[("shadow_burnin_rounds_total", (("bucket", "exact"),))] == \
        m[("shadow_burnin_rounds_total", (("bucket", "exact"),))] + 1


def test_run_metrics_port_scraped_while_run_goes(tmp_path: Path, spawn_scripted: Any) -> None:
    v1, _ = spawn_scripted()
    v2, _ = spawn_scripted(diverge_after=3, delay_ms=20)
    log = tmp_path / "run.jsonl"
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "shadow_burnin", "run", "--v1", v1, "--v2", v2, "--prompts",
         str(write_prompts(tmp_path / "p.jsonl")), "--rounds", "60", "--interval", "0.05",
         "--log", str(log), "--metrics-port", str(port), "--quiet"],
        env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    seen: list[float] = []
    try:
        for _ in range(400):  # bounded polling while the run goes
            if proc.poll() is not None:
                break
            try:
                before = len(log_rounds(log)) if log.exists() else 0
                m = scrape(url)
                after = len(log_rounds(log)) if log.exists() else 0
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.05)
                continue
            if m.get(("shadow_burnin_log_readable", ())) != 1.0:
                continue
            total = sum(m[("shadow_burnin_rounds_total", (("bucket", b),))] for b in BUCKETS)
            assert before <= total <= after  # the log's count at the time of the scrape
            assert m[("shadow_burnin_requests_total", (("side", "v2"),))] == total
            seen.append(total)
            if len(set(seen)) >= 3 and 0 < total < 60:
                break
            time.sleep(0.1)
        assert len({s for s in seen if 0 < s < 60}) >= 2, seen  # scraped mid-run, growing
        assert seen == sorted(seen)
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    # after the run: serve's /metrics gives the same figures for the same log
    rounds = log_rounds(log)
    surl, sproc = start_serve(log)
    try:
        m = scrape(surl)
    finally:
        stop(sproc)
    for b in BUCKETS:
        assert m[("shadow_burnin_rounds_total", (("bucket", b),))] == \
            sum(r["bucket"] == b for r in rounds)
    assert sum(r["bucket"] == "prefix-only" for r in rounds) > 0


def test_serve_and_run_metrics_server_agree(known_log: KnownLog) -> None:
    from shadow_burnin.app.metrics import start_metrics_server
    from shadow_burnin.cli.options import load_config

    port = free_port()
    server = start_metrics_server(load_config(None, None, known_log.path), port)
    try:
        a = scrape(f"http://127.0.0.1:{port}")
    finally:
        server.shutdown()
        server.server_close()
    url, proc = start_serve(known_log.path)
    try:
        b = scrape(url)
    finally:
        stop(proc)
    assert a == pytest.approx(b, nan_ok=True) and len(a) > 50
