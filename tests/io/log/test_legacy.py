"""The earlier bash tool's log and state: detection, conversion, re-classification."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from shadow_burnin.core.records import Round
from shadow_burnin.errors import LogError, StateError
from shadow_burnin.io.log import legacy
from shadow_burnin.io.log.legacy import (
    LegacyLineError,
    compare_state,
    convert_line,
    convert_ts,
    is_legacy_log,
    is_legacy_record,
    iter_legacy,
    old_verdict,
    read_legacy_state,
    tally,
)
from shadow_burnin.io.log.logread import Window, iter_records, parse_time, scan

FIXTURES = Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "legacy"
LOG = FIXTURES / "legacy.jsonl"


def lines() -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in LOG.read_bytes().splitlines() if line.strip()]


def side(text: str | None, ms: float | None, tokens: int | None,
         error: str | None = None) -> dict[str, Any]:
    return {"text": text, "latency_ms": ms, "ttft_ms": None, "status": None,
            "finish_reason": None, "completion_tokens": tokens, "error": error}


def expected(n: int, ts: str, idx: int, bucket: str, div: int | None, chars: int | None,
             v1: dict[str, Any], v2: dict[str, Any], snippet: str,
             old: tuple[bool | None, int | None]) -> dict[str, Any]:
    return {"schema": 1, "round": n, "ts": ts, "prompt_id": f"legacy-{idx}",
            "category": "legacy", "bucket": bucket, "divergence_byte": div,
            "prefix_match_chars": chars, "v1": v1, "v2": v2, "source": "legacy",
            "legacy": {"prompt_snippet": snippet, "first_line_only": True,
                       "old_full_match": old[0], "old_prefix_match_chars": old[1]}}


DOWN = "legacy: unreachable"
EXPECTED = [
    expected(1, "2026-04-21T10:00:00.000Z", 0, "exact", None, 29,
             side("! How can I assist you today?", 198.0, 9),
             side("! How can I assist you today?", 267.0, 8), "Hi", (True, 29)),
    # the old tool said prefix-only (a shared first character): really no-match
    expected(2, "2026-04-21T10:00:03.000Z", 1, "no-match", 2, 2,
             side("The capital is Paris.", 300.0, 6), side("Tha capital is Paris.", 310.0, 6),
             "Capital of France?", (False, 1)),
    expected(3, "2026-04-21T10:00:06.000Z", 2, "prefix-only", 9, 9,
             side("1, 2, 3, 4, 5", 400.0, 9), side("1, 2, 3, ", 380.0, 6),
             "Count to five", (False, 9)),
    # é (C3 A9) vs è (C3 A8): the lead byte is shared, so the bytes part at 4, chars at 3
    expected(4, "2026-04-21T10:00:09.250Z", 3, "no-match", 4, 3,
             side("café ☕ 日本", 120.5, 4), side("cafè ☕ 日本", 130.0, 4),
             "Say café", (False, 3)),
    expected(5, "2026-04-21T10:00:12.000Z", 4, "exact", None, 3,
             side("👍🏽ß", 90.0, 2), side("👍🏽ß", 95.0, 2), "Emoji", (True, 3)),
    expected(6, "2026-04-21T10:00:15.000Z", 5, "v1-unreachable", None, None,
             side(None, None, None, DOWN), side(None, None, None),
             "Who wrote Hamlet?", (None, None)),
    expected(7, "2026-04-21T10:00:18.000Z", 6, "v2-unreachable", None, None,
             side(None, None, None), side(None, None, None, DOWN),
             "Name three primary colors.", (None, None)),
    expected(8, "2026-04-21T10:00:21.000Z", 7, "both-unreachable", None, None,
             side(None, None, None, DOWN), side(None, None, None, DOWN),
             "The chemical symbol for gold is", (None, None)),
    expected(9, "2026-04-21T10:00:24.000Z", 8, "no-match", 0, 0,
             side("1", 164.0, 1), side("0", 165.0, 1), "Pick a digit", (False, 0)),
]


@pytest.mark.parametrize("index", range(len(EXPECTED)))
def test_every_line_kind_converts(index: int) -> None:
    got = convert_line(lines()[index], index + 1)
    assert got == EXPECTED[index]
    assert Round.from_json(got).to_json() == got  # exactly our record shape
    assert not {"setup", "seed", "cursor"} & got.keys()


def test_iter_legacy_numbers_from_first_round() -> None:
    got = list(iter_legacy(LOG, first_round=41))
    assert [r["round"] for _n, _o, r in got] == list(range(41, 50))
    assert [n for n, _o, _r in got] == list(range(1, 10))


def test_reclassification_vs_old_verdicts() -> None:
    olds = [old_verdict(obj) for obj in lines()]
    assert olds == ["exact", "prefix-only", "prefix-only", "prefix-only", "exact",
                    "v1-unreachable", "v2-unreachable", "both-unreachable", "no-match"]
    t = tally(LOG)
    assert t.rounds == 9
    none = {"not-comparable": 0, "client-cancelled": 0}  # the mirror's buckets
    assert t.old == {"exact": 2, "prefix-only": 3, "no-match": 1, "v1-unreachable": 1,
                     "v2-unreachable": 1, "both-unreachable": 1, **none}
    assert t.new == {"exact": 2, "prefix-only": 1, "no-match": 3, "v1-unreachable": 1,
                     "v2-unreachable": 1, "both-unreachable": 1, **none}
    assert t.rebucketed == 2 and t.moves == {("prefix-only", "no-match"): 2}
    assert t.prefix_chars_changed == 1  # "Tha"/"The": the old tool said 1, it is 2
    assert t.sums == {"prefix_chars_total": 45, "v1_ms_total": 1272.5, "v2_ms_total": 1347}
    assert (t.first_ts, t.last_ts) == ("2026-04-21T10:00:00Z", "2026-04-21T10:00:24Z")


@pytest.mark.parametrize(("raw", "ours"), [
    ("2026-04-22T08:59:45Z", "2026-04-22T08:59:45.000Z"),
    ("2026-04-22T08:59:45.123987Z", "2026-04-22T08:59:45.123Z"),
    ("2026-04-22T10:59:45+02:00", "2026-04-22T08:59:45.000Z"),
    ("2026-04-22T08:59:45", "2026-04-22T08:59:45.000Z"),
])
def test_ts_conversion(raw: str, ours: str) -> None:
    assert convert_ts(raw) == ours
    gap = (parse_time(raw) - parse_time(ours)).total_seconds()
    assert 0 <= gap < 0.001  # milliseconds, truncated like the runner's timestamps


@pytest.mark.parametrize("bad", ["yesterday", "", None, 1745312385])
def test_bad_ts(bad: Any) -> None:
    with pytest.raises(LegacyLineError):
        convert_ts(bad)


def test_detection(tmp_path: Path) -> None:
    assert is_legacy_log(LOG)
    assert is_legacy_record({"prompt_idx": 1}) and is_legacy_record({"v1_unreachable": True})
    assert not is_legacy_record({"schema": 1, "prompt_idx": 1, "round": 1})
    assert not is_legacy_record([1])
    ours = tmp_path / "ours.jsonl"
    ours.write_bytes(orjson.dumps({"schema": 1, "round": 1, "ts": "x"}) + b"\n")
    blank_first = tmp_path / "blank.jsonl"
    blank_first.write_bytes(b"\n  \n" + LOG.read_bytes())
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_bytes(b"not json\n")
    assert not is_legacy_log(ours) and not is_legacy_log(garbage)
    assert not is_legacy_log(tmp_path / "missing.jsonl") and not is_legacy_log(tmp_path)
    assert is_legacy_log(blank_first)
    assert [r["round"] for _n, _o, r in iter_legacy(blank_first)] == list(range(1, 10))


def test_malformed_line_names_file_and_line() -> None:
    path = FIXTURES / "malformed.jsonl"
    with pytest.raises(LogError) as info:
        list(iter_legacy(path))
    assert info.value.path == str(path) and info.value.line == 4
    assert str(info.value).startswith(f"{path}:4: ")


@pytest.mark.parametrize(("change", "message"), [
    ({"v1_text": None}, "'v1_text' missing"),
    ({"full_match": "yes"}, "'full_match'"),
    ({"prefix_match_chars": -1}, "negative"),
    ({"prompt_idx": True}, "'prompt_idx'"),
    ({"v2_ms": "fast"}, "'v2_ms'"),
    ({"v1_unreachable": "no"}, "'v1_unreachable' is not a boolean"),
    ({"ts": "soon"}, "'ts' is not an ISO-8601"),
    ({"schema": 1}, "not a line of the earlier tool's log"),
])
def test_bad_fields(change: dict[str, Any], message: str) -> None:
    obj = {**lines()[1], **change}
    with pytest.raises(LegacyLineError, match=message):
        convert_line(obj, 1)


def test_unreachable_line_without_flags_is_malformed() -> None:
    with pytest.raises(LegacyLineError, match="'v1_text' missing"):
        convert_line({"ts": "2026-04-21T10:00:15Z", "prompt_idx": 5,
                      "v1_unreachable": False, "v2_unreachable": False}, 1)


def test_read_state() -> None:
    got = read_legacy_state(FIXTURES / "legacy.state")
    assert got == {"rounds": 12, "exact_matches": 4, "prefix_only_matches": 3, "no_match": 2,
                   "v1_unreachable": 2, "v2_unreachable": 2, "prefix_chars_total": 60,
                   "v1_ms_total": 2000, "v2_ms_total": 2100,
                   "started_at": "2026-04-21T09:59:50Z", "last_ts": "2026-04-21T10:00:24Z"}


@pytest.mark.parametrize(("text", "line", "message"), [
    ("# h\nrounds=9\nexact_matches=two\n", 3, "not a non-negative integer"),
    ("# h\n\nrounds 9\n", 3, "not a KEY=VAL line"),
    ("rounds=9\nrounds=10\n", 2, "given twice"),
    ("rounds=9\nlast_ts=noon\n", 2, "not an ISO-8601 time"),
    ("# only a header\nfoo=bar\n", None, "no rounds=N line"),
])
def test_bad_state(tmp_path: Path, text: str, line: int | None, message: str) -> None:
    path = tmp_path / "old.state"
    path.write_text(text)
    with pytest.raises(StateError, match=message) as info:
        read_legacy_state(path)
    assert info.value.path == str(path) and info.value.line == line


def test_state_fixture_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="exact_matches is not a non-negative integer") as info:
        read_legacy_state(FIXTURES / "malformed.state")
    assert info.value.line == 3
    with pytest.raises(StateError, match="no such legacy state file"):
        read_legacy_state(tmp_path / "nope")


def test_compare_state_with_a_tail_of_the_run() -> None:
    got = compare_state(read_legacy_state(FIXTURES / "legacy.state"), tally(LOG))
    rows = {r["key"]: (r["state"], r["log"]) for r in got["rows"]}
    assert rows["rounds"] == (12, 9)
    assert rows["exact_matches"] == (4, 2) and rows["prefix_only_matches"] == (3, 3)
    assert rows["v1_unreachable"] == (2, 2) and rows["v2_unreachable"] == (2, 2)
    assert rows["last_ts"] == ("2026-04-21T10:00:24Z", "2026-04-21T10:00:24Z")
    assert got["notes"][0].startswith("the state counts 12 rounds, the log holds 9: 3 rounds")
    assert "the log is the tail of that run" in got["notes"][0]
    assert "sum to 13, 1 more than its rounds" in got["notes"][1]
    assert len(got["notes"]) == 2


def test_compare_state_same_rounds_reports_mismatches() -> None:
    state: dict[str, int | str] = {"rounds": 9, "exact_matches": 2, "prefix_only_matches": 2,
                                   "no_match": 2, "v1_unreachable": 2, "v2_unreachable": 2}
    notes = compare_state(state, tally(LOG))["notes"]
    assert notes[1:] == ["prefix_only_matches: state 2, log 3", "no_match: state 2, log 1"]
    assert notes[0].startswith("the state's counters sum to 10, 1 more than its rounds")
    low = compare_state({"rounds": 20, "exact_matches": 1}, tally(LOG))["notes"]
    assert "exact_matches: state 1 is below the log's 2" in low
    assert "no_match: missing from the state" in low


def test_logread_converts_a_legacy_log_on_the_fly() -> None:
    result = scan(LOG)
    assert result.notes == [legacy.NOTE]
    assert len(result.columns) == 9
    since = parse_time("2026-04-21T10:00:10Z").timestamp()
    got = [r for _n, _t, r in iter_records(LOG, Window(since=since))]
    assert [r["round"] for r in got] == [5, 6, 7, 8, 9]
    assert all(r["source"] == "legacy" for r in got)
