"""``io.log.livescan`` and ``app.dashboard``: the incremental reader gives bench's columns,
reads only new bytes, skips a torn tail; view models over a log with known contents."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from shadow_burnin.app.dashboard import Dashboard, Filters, bin_width, series, status
from shadow_burnin.cli.options import load_config
from shadow_burnin.core.stats import summarise
from shadow_burnin.errors import LogError
from shadow_burnin.io.log import livescan
from shadow_burnin.io.log import logscan as logscan_mod
from shadow_burnin.io.log.livescan import LiveLog
from shadow_burnin.io.log.logread import Window, scan
from shadow_burnin.io.log.sidecars import index_path
from tests.web.conftest import T0, build_known_log, round_record


def same_columns(a, b) -> None:
    assert len(a) == len(b)
    np.testing.assert_array_equal(a.bucket, b.bucket)
    np.testing.assert_array_equal(a.ts, b.ts)
    for side in ("v1", "v2"):
        np.testing.assert_array_equal(a.latency[side], b.latency[side])
        np.testing.assert_array_equal(a.ttft[side], b.ttft[side])
    assert [a.categories[i] for i in a.category] == [b.categories[i] for i in b.category]
    for k in a.extra:
        np.testing.assert_array_equal(a.extra[k], b.extra[k])


def test_incremental_reads_equal_bench_and_read_only_new_bytes(tmp_path: Path,
                                                               monkeypatch) -> None:
    monkeypatch.setenv("SHADOW_BURNIN_INDEX", "off")  # the log's own fold (index: below)
    monkeypatch.setattr(livescan, "BLOCK_BYTES", 4096)  # many blocks, and lines across them
    known = build_known_log(tmp_path / "b.jsonl")
    live = LiveLog(known.path)
    snap = live.refresh()
    same_columns(snap.columns, scan(known.path).columns)
    assert list(snap.rounds) == [r["round"] for r in known.rounds()]
    size = known.path.stat().st_size
    assert live.bytes_read == size
    # an unchanged log reads nothing; appended rounds: only their bytes
    live.refresh()
    assert live.bytes_read == size
    new = [known.next_round("no-match"), ]
    known.append(new)
    added = known.path.stat().st_size - size
    snap = live.refresh()
    assert live.bytes_read == size + added
    same_columns(snap.columns, scan(known.path).columns)
    # each round's offset opens its own line
    for r in known.rounds()[::17] + new:
        assert live.read_round(r["round"]) == r
    # A/A records (a separate line, or inside the round) and errors are kept
    assert sum(o.get("kind") == "aa" for o in snap.other) == 1
    assert snap.errors["v2"]["http-503"] == sum(r["bucket"] == "v2-unreachable"
                                                for r in known.rounds())


def test_the_first_read_comes_from_the_index_then_only_new_bytes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The round index gives the first snapshot (no line read: the unreachable rounds'
    error codes are index columns); later refreshes fold only the appended bytes; the
    same figures as the log's own fold."""
    known = build_known_log(tmp_path / "b.jsonl")
    size = known.path.stat().st_size
    ref = LiveLog(known.path)
    ref._from_index = lambda: False  # type: ignore[method-assign]
    want = ref.refresh()
    LiveLog(known.path).refresh()  # the index built (this read folds the log)

    def no_line(*_a: object, **_k: object) -> None:
        raise AssertionError("a line of the log was decoded")

    with monkeypatch.context() as m:  # a reader of the saved index decodes no line
        m.setattr(livescan, "decode_line", no_line)
        m.setattr(livescan, "_fold_slow", no_line)
        m.setattr(livescan.LiveLog, "_fold", no_line)
        m.setattr(logscan_mod, "scan_range_at", no_line)
        live = LiveLog(known.path)
        snap = live.refresh()
    assert live.bytes_read == 0 and snap.size == size
    same_columns(snap.columns, want.columns)
    assert list(snap.rounds) == list(want.rounds)
    assert list(snap.offsets) == list(want.offsets)
    assert snap.errors == want.errors and snap.errors["v2"]["http-503"] > 0
    assert snap.aa is not None and len(snap.aa) == 1  # the A/A pair: in the index's table
    assert [o for o in snap.other if o.get("kind") != "aa"] == \
        [o for o in want.other if o.get("kind") != "aa"]
    new = [known.next_round("no-match")]
    known.append(new)
    snap = live.refresh()
    assert live.bytes_read == known.path.stat().st_size - size
    same_columns(snap.columns, scan(known.path).columns)
    for r in known.rounds()[::17] + new:
        assert live.read_round(r["round"]) == r
    d = Dashboard(load_config(None, None, known.path))
    ov = d.overview()
    assert ov["aa"]["records"] == 1 and ov["rounds"] == len(known.rounds())


def test_torn_tail_waits_until_complete_and_a_replaced_log_is_reread(tmp_path: Path) -> None:
    log = tmp_path / "t.jsonl"
    recs = [round_record(n, "exact", "a", "a", t=T0 + n, category="c") for n in (1, 2, 3)]
    log.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in recs[:2]))
    line = orjson.dumps(recs[2])
    with open(log, "ab") as fh:
        fh.write(line[:25])
    live = LiveLog(log)
    assert len(live.refresh().columns) == 2
    with open(log, "ab") as fh:
        fh.write(line[25:] + b"\n")
    assert len(live.refresh().columns) == 3
    # replaced by a shorter log (a new run): read again from the start
    log.write_bytes(orjson.dumps(recs[0]) + b"\n")
    snap = live.refresh()
    assert len(snap.columns) == 1 and list(snap.rounds) == [1]


def test_embedded_aa_and_bad_lines(tmp_path: Path) -> None:
    log = tmp_path / "a.jsonl"
    rec = round_record(1, "exact", "x", "x", t=T0, category="c",
                       aa={"target": "v1", "bucket": "no-match", "forensics": None})
    log.write_bytes(orjson.dumps(rec) + b"\n")
    snap = LiveLog(log).refresh()
    assert snap.aa is not None and snap.aa.bucket.tolist() == [2]  # no-match, from the index
    assert not [o for o in snap.other if o["kind"] == "aa"]
    index_path(log).unlink()
    with open(log, "ab") as fh:  # a pair folded after the index: a record in ``other``
        fh.write(orjson.dumps(rec | {"round": 2}) + b"\n")
    live = LiveLog(log)
    live._from_index = lambda: False  # type: ignore[method-assign]
    assert [o["bucket"] for o in live.refresh().other if o["kind"] == "aa"] == ["no-match"] * 2
    with open(log, "ab") as fh:
        fh.write(b"{not json}\n")
    with pytest.raises(LogError, match=r"a\.jsonl:3: line is not JSON"):  # the index names it
        LiveLog(log).refresh()
    foreign = tmp_path / "f.jsonl"
    foreign.write_text("hello")
    with pytest.raises(LogError, match="not a shadow-burnin log"):
        LiveLog(foreign).refresh()
    with pytest.raises(LogError, match="no such log file"):
        LiveLog(tmp_path / "missing.jsonl").refresh()


def test_overview_series_divergences(tmp_path: Path) -> None:
    known = build_known_log(tmp_path / "b.jsonl")
    d = Dashboard(load_config(None, None, known.path))
    ov = d.overview()
    s = summarise(scan(known.path).columns)
    assert ov["rounds"] == s.rounds and ov["counts"] == s.counts
    assert ov["exact_match_ci95"] == list(s.exact_match_ci95)
    assert ov["halt"]["active"] and ov["aa"]["records"] == 1
    sr = d.series()
    assert sr["width"] == 30 and len(sr["bins"]) == 120
    assert sum(b["no_match"] for b in sr["bins"]) == s.counts["no-match"]
    assert [c["category"] for c in sr["categories"]] == ["code", "math", "prose"]
    div = d.divergences(Filters(bucket="no-match", category="math"))
    want = [r["round"] for r in known.rounds() if r["bucket"] == "no-match"
            and r["category"] == "math"]
    assert [i["round"] for i in div["items"]] == want and div["total"] == len(want)
    assert all(i["verdict"] == "regression" for i in div["items"])
    t = T0 + 30 * 60
    late = d.divergences(Filters(since=t))
    assert all(i["round"] > 59 for i in late["items"]) and late["total"] > 0
    windowed = Dashboard(load_config(None, None, known.path), Window(since=t))
    assert windowed.overview()["rounds"] == 61


def test_bin_width_and_empty_series() -> None:
    assert bin_width(60) == 1 and bin_width(3570) == 30 and bin_width(72 * 3600) == 3600
    assert bin_width(10**9) == 7 * 86400
    empty = series(scan.__globals__["ColumnBuilder"]().build())
    assert empty["bins"] == []


def test_status_rate_age_and_eta(tmp_path: Path) -> None:
    known = build_known_log(tmp_path / "b.jsonl")
    d = Dashboard(load_config(None, None, known.path))
    last = T0 + 30 * 120
    st = status(d, now=last, window_s=600)
    assert st["rounds_per_minute"] == pytest.approx(20 / 10)  # 20 rounds in 10 minutes
    assert st["last_round_age_s"] == pytest.approx(0, abs=1)
    eta = {g["gate"]: g for g in st["waiting"]}
    # 50 000 − 120 rounds at 2 a minute
    assert eta["rounds"]["eta"] is not None
    from datetime import datetime
    got = datetime.fromisoformat(eta["rounds"]["eta"]).timestamp()
    assert got == pytest.approx(last + (50_000 - 120) / 2 * 60, abs=1)
    stalled = status(d, now=last + 7200, window_s=600)
    assert stalled["rounds_per_minute"] == 0
    assert {g["gate"]: g for g in stalled["waiting"]}["rounds"]["eta"] is None


def test_first_read_on_every_core_equals_the_serial_read(tmp_path: Path,
                                                         monkeypatch) -> None:
    monkeypatch.setenv("SHADOW_BURNIN_INDEX", "off")  # the log's own fold, in parallel
    known = build_known_log(tmp_path / "b.jsonl")
    with open(known.path, "ab") as fh:
        fh.write(b'{"schema": 1, "rou')  # a torn tail stays unread
    serial = LiveLog(known.path).refresh()
    monkeypatch.setattr(livescan, "PARALLEL_MIN_BYTES", 1)
    monkeypatch.setattr(livescan.os, "cpu_count", lambda: 3)
    live = LiveLog(known.path)
    par = live.refresh()
    same_columns(par.columns, serial.columns)
    assert list(par.rounds) == list(serial.rounds)
    assert list(par.offsets) == list(serial.offsets)
    assert par.other == serial.other and par.errors == serial.errors
    assert par.size == serial.size < known.path.stat().st_size
    assert live.read_round(77) == next(r for r in known.rounds() if r["round"] == 77)


def test_liveness_stall_and_unreachable_spike(tmp_path: Path) -> None:
    from shadow_burnin.app.dashboard import liveness

    known = build_known_log(tmp_path / "b.jsonl")
    cols = scan(known.path).columns
    last = T0 + 30 * 120
    assert liveness(cols, last + 60) == []
    stalled = liveness(cols, last + 601)
    assert [a["kind"] for a in stalled] == ["stall"] and "10 min" in stalled[0]["text"]
    # v2 down for the last 10 minutes: a spike on v2 only
    known.append([round_record(n, "v2-unreachable", "a", None, t=T0 + 30 * n, category="c")
                  for n in range(121, 141)])
    cols = scan(known.path).columns
    spikes = liveness(cols, T0 + 30 * 140)
    assert [(a["kind"], a["side"]) for a in spikes] == [("unreachable-spike", "v2")]
    assert spikes[0]["rate"] == 1.0


def test_status_cli_alerts_through_the_halt_channel(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from shadow_burnin.cli import cli

    known = build_known_log(tmp_path / "b.jsonl")
    got = tmp_path / "alert.json"
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[halt]\non_halt = "cat > {got}"\n')
    out = CliRunner().invoke(cli, ["status", "--config", str(cfg), "--log", str(known.path),
                                   "--alert", "--json"])
    assert out.exit_code == 1, out.output  # the log's last round is long ago: stalled
    st = orjson.loads(out.stdout)
    assert st["rounds"] == 120 and [a["kind"] for a in st["alerts"]] == ["stall"]
    body = orjson.loads(got.read_bytes())
    assert body["event"] == "stall" and "STALLED" in body["text"]
    assert "alert stall: command: sent" in out.stderr
    human = CliRunner().invoke(cli, ["status", "--log", str(known.path), "--stall", "3000d"])
    assert human.exit_code == 0 and "rounds ≥ 50 000" in human.stdout
    bad = CliRunner().invoke(cli, ["status", "--log", str(known.path), "--stall", "soon"])
    assert bad.exit_code == 2 and "--stall" in bad.stderr
