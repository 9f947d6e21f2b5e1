"""Dashboard, report and metrics figures on generated logs (``bench_1m``'s generator).

Usage: python benchmarks/dashboard.py [--rounds 1000000] [--small 100000] [--repeat 5]
                                      [--keep DIR]

Prints, beside the issue's reference:
- first render: from starting ``shadow-burnin serve`` to the overview's figures shown in
  Chromium (the server reads the whole log first), median of ``--repeat``; and the page
  load alone once the server is up;
- update latency: a round appended to the log → the open page shows it (no reload; the
  page polls once a second), median of ``--repeat``;
- ``report --html`` wall time on ``--small`` and ``--rounds`` rounds, and the file size;
- a ``/metrics`` scrape (first and cached).
Asserts nothing about time.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import orjson

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
sys.path.insert(0, str(HERE))
from bench_1m import generate  # noqa: E402

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(SRC) + os.pathsep + e.get("PYTHONPATH", "")
    return e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_serve(log: Path, index: bool = True) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    e = env()
    if not index:  # the reference: the log's own fold (the dashboard before the index)
        e["SHADOW_BURNIN_INDEX"] = "off"
    proc = subprocess.Popen([sys.executable, "-m", "shadow_burnin", "serve", "--log", str(log),
                             "--port", str(port)], env=e, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    return f"http://127.0.0.1:{port}", proc


def wait_up(url: str, tries: int = 6000) -> None:
    for _ in range(tries):
        try:
            with urllib.request.urlopen(url + "/static/style.css", timeout=1):
                return
        except OSError:
            time.sleep(0.01)
    raise SystemExit("serve did not come up")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    proc.wait(30)


def one_round(n: int) -> bytes:
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(1_780_000_000 + n * 2.5))
    side = {"text": "fresh", "latency_ms": 400.0, "ttft_ms": 30.0, "status": 200,
            "finish_reason": "stop", "completion_tokens": 3, "error": None}
    return orjson.dumps({"schema": 1, "round": n, "ts": f"{ts}.000Z", "prompt_id": "live-0",
                         "category": "live", "bucket": "exact", "divergence_byte": None,
                         "prefix_match_chars": 5, "v1": side, "v2": side}) + b"\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=1_000_000)
    ap.add_argument("--small", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--keep", type=Path, default=None)
    ap.add_argument("--reference", action="store_true",
                    help="also first renders with SHADOW_BURNIN_INDEX=off, interleaved")
    ap.add_argument("--no-report", action="store_true", help="skip the report timings")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="sb-dash-"))
    work.mkdir(parents=True, exist_ok=True)
    big, small = work / f"{args.rounds}.jsonl", work / f"{args.small}.jsonl"
    for path, n in ((big, args.rounds), (small, args.small)):
        if not path.exists():
            print(f"generating {n:,} rounds → {path}", flush=True)
            generate(path, n)
    size_mb = big.stat().st_size / 1e6

    from playwright.sync_api import sync_playwright

    first, load, update, without = [], [], [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        for i in range(args.repeat):
            if args.reference:
                t0 = time.perf_counter()
                url, proc = start_serve(big, index=False)
                try:
                    wait_up(url)
                    page = browser.new_page()
                    page.goto(url + "/")
                    page.wait_for_selector("[data-figure=rounds]")
                    without.append(time.perf_counter() - t0)
                    print(f"  first render without the index {i + 1}: {without[-1]:.2f} s",
                          flush=True)
                    page.close()
                finally:
                    stop(proc)
            t0 = time.perf_counter()
            url, proc = start_serve(big)
            try:
                wait_up(url)
                page = browser.new_page()
                t1 = time.perf_counter()
                page.goto(url + "/")
                page.wait_for_selector("[data-figure=rounds]")
                t2 = time.perf_counter()
                first.append(t2 - t0)
                load.append(t2 - t1)
                shown = page.locator("[data-figure=rounds]").inner_text()
                print(f"  first render {i + 1}: {t2 - t0:.2f} s (page {t2 - t1:.2f} s), "
                      f"rounds shown {shown}", flush=True)
                if i == args.repeat - 1:  # update latency on the last server
                    n = args.rounds + 1_000
                    for _ in range(args.repeat):
                        n += 1
                        with open(big, "ab") as fh:
                            before = time.perf_counter()
                            fh.write(one_round(n))
                            fh.flush()
                            os.fsync(fh.fileno())
                        count = int(shown.replace(",", "")) + 1
                        page.wait_for_function(
                            "() => document.querySelector('[data-figure=rounds]')"
                            f".textContent === '{count:,}'", timeout=120_000)
                        update.append(time.perf_counter() - before)
                        shown = f"{count:,}"
                    t = time.perf_counter()
                    with urllib.request.urlopen(url + "/metrics") as r:
                        r.read()
                    scrape = time.perf_counter() - t
                    t = time.perf_counter()
                    with urllib.request.urlopen(url + "/metrics") as r:
                        metrics_bytes = len(r.read())
                    scrape_cached = time.perf_counter() - t
                page.close()
            finally:
                stop(proc)
        browser.close()

    reports = {}
    for path, n in () if args.no_report else ((small, args.small), (big, args.rounds)):
        times = []
        out = work / f"report-{n}.html"
        for _ in range(3):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "shadow_burnin", "report", "--log", str(path),
                            "--html", str(out)], env=env(), check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            times.append(time.perf_counter() - t)
        reports[n] = (statistics.median(times), out.stat().st_size)

    med = statistics.median
    print()
    print(f"log: {args.rounds:,} rounds, {size_mb:,.0f} MB; {os.cpu_count()} cores; "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"{'figure':<52}{'measured':>14}  reference")
    label = f"first render, serve start → figures (median of {len(first)})"
    print(f"{label:<52}"
          f"{med(first):>12.2f} s  < 3 s (issue)")
    print(f"{'  of which the page load once serve is up':<52}{med(load):>12.2f} s")
    if without:
        label = f"first render without the index (median of {len(without)})"
        print(f"{label:<52}{med(without):>12.2f} s  = {med(without) / med(first):.1f}x "
              "the indexed first render")
    label = f"update latency, append → page (median of {len(update)})"
    print(f"{label:<52}"
          f"{med(update):>12.2f} s  polls every 1 s")
    print(f"{'/metrics scrape, first after an append':<52}{scrape:>12.3f} s")
    print(f"{'/metrics scrape, cached':<52}{scrape_cached:>12.3f} s  ({metrics_bytes:,} B)")
    for n, (t, size) in reports.items():
        label = f"report --html, {n:,} rounds (median of 3)"
        print(f"{label:<52}{t:>12.2f} s  "
              f"{size / 1e3:,.0f} kB file")


if __name__ == "__main__":
    main()
