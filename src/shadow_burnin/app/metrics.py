"""Prometheus metrics taken from the log (``prometheus-client``).

Every figure is computed from the log through ``app.dashboard.Dashboard`` (the log's
incremental reader), never counted in memory by the runner: totals survive restarts of
``serve`` and of ``run``, and ``serve``'s ``/metrics`` and ``run --metrics-port`` give the
same values for the same log.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from shadow_burnin.app.dashboard import Dashboard
from shadow_burnin.config import Config
from shadow_burnin.core.records import BUCKETS, SIDES
from shadow_burnin.errors import ShadowBurninError

# seconds; the last bucket (+Inf) is added by the histogram
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
GATE_STATES = ("pass", "fail", "waiting")


def _histogram(values_ms: np.ndarray) -> tuple[list[tuple[str, float]], float]:
    v = np.sort(values_ms[~np.isnan(values_ms)]) / 1000.0
    cum = np.searchsorted(v, np.array(LATENCY_BUCKETS), side="right")
    buckets = [(f"{b:g}", float(c)) for b, c in zip(LATENCY_BUCKETS, cum, strict=True)]
    buckets.append(("+Inf", float(v.size)))
    return buckets, float(v.sum())


class LogCollector(Collector):
    """Collects from the log at every scrape (cheap when no round arrived: cached)."""

    def __init__(self, view: Dashboard) -> None:
        self.view = view

    def collect(self) -> Iterator[Metric]:
        readable = GaugeMetricFamily("shadow_burnin_log_readable",
                                     "1 when the log could be read at this scrape")
        try:
            families = self.view.cached("metrics", lambda _snap: list(self._families()))
        except ShadowBurninError:  # no log yet (a run starting), or not ours
            readable.add_metric([], 0.0)
            yield readable
            return
        readable.add_metric([], 1.0)
        yield readable
        yield from families

    def _families(self) -> Iterator[Metric]:
        snap = self.view.snapshot()
        ov = self.view.overview()
        cols = snap.columns
        rounds = CounterMetricFamily("shadow_burnin_rounds", "Rounds logged, by bucket",
                                     labels=["bucket"])
        for b in BUCKETS:
            rounds.add_metric([b], ov["counts"][b])
        yield rounds
        requests = CounterMetricFamily("shadow_burnin_requests",
                                       "Requests sent to each side (one per round)",
                                       labels=["side"])
        errors = CounterMetricFamily("shadow_burnin_errors",
                                     "Requests without a usable reply, by side and error code",
                                     labels=["side", "code"])
        for side in SIDES:
            requests.add_metric([side], len(cols))
            for code, n in sorted(snap.errors[side].items()):
                errors.add_metric([side, code], n)
        yield requests
        yield errors
        for name, source, text in (("latency", cols.latency, "Reply latency"),
                                   ("ttft", cols.ttft, "Time to first token")):
            h = HistogramMetricFamily(f"shadow_burnin_{name}_seconds",
                                      f"{text} per side (replies only)", labels=["side"])
            for side in SIDES:
                buckets, total = _histogram(source[side])
                h.add_metric([side], buckets, total)
            yield h
        g = GaugeMetricFamily("shadow_burnin_exact_match_rate",
                              "Exact rounds / rounds where both replied (NaN: none yet)")
        rate = ov["exact_match_rate"]
        g.add_metric([], float("nan") if rate is None else rate)
        yield g
        ci = ov["exact_match_ci95"] or (float("nan"), float("nan"))
        g = GaugeMetricFamily("shadow_burnin_exact_match_ci95",
                              "Wilson 95 % interval of the exact-match rate", labels=["bound"])
        g.add_metric(["low"], ci[0])
        g.add_metric(["high"], ci[1])
        yield g
        g = GaugeMetricFamily("shadow_burnin_gate_state",
                              "1 for each gate's current state (pass, fail, waiting)",
                              labels=["gate", "state"])
        for gate in ov["gates"]["gates"]:
            for state in GATE_STATES:
                g.add_metric([gate["gate"], state], 1.0 if gate["state"] == state else 0.0)
        yield g
        g = GaugeMetricFamily("shadow_burnin_cutover_ready",
                              "1 when every gate passes, 0 otherwise")
        g.add_metric([], 1.0 if ov["gates"]["verdict"] == "pass" else 0.0)
        yield g
        g = GaugeMetricFamily("shadow_burnin_halt_active", "1 while a halt is not acknowledged")
        g.add_metric([], 1.0 if ov["halt"]["active"] else 0.0)
        yield g
        g = GaugeMetricFamily("shadow_burnin_last_round_timestamp_seconds",
                              "Start time of the newest logged round (epoch seconds)")
        last = ov.get("last_epoch")
        g.add_metric([], float("nan") if last is None else float(last))
        yield g


def registry_for(view: Dashboard) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(LogCollector(view))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


def start_metrics_server(cfg: Config, port: int, host: str = "127.0.0.1") -> Any:
    """``run --metrics-port``: serve ``/metrics`` for ``cfg``'s log from a daemon thread
    (prometheus-client's own HTTP server). Returns the server (``.shutdown()`` stops it)."""
    view = Dashboard(cfg)
    # the first read of a large log forks workers: here, in the caller's thread (no log
    # yet is fine: the run is about to create it)
    with contextlib.suppress(ShadowBurninError):
        view.snapshot()
    server, thread = start_http_server(port, addr=host, registry=registry_for(view))
    assert isinstance(thread, threading.Thread)
    return server
