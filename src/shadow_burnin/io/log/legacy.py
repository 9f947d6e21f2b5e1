"""The earlier bash tool's log and state file, read into shadow-burnin's shapes.

Its JSONL log has one line per round, ``{ts, prompt_idx, prompt_snippet,
prefix_match_chars, full_match, v1_ms, v2_ms, v1_text, v2_text, v1_tokens, v2_tokens}``,
or ``{ts, prompt_idx, prompt_snippet, v1_unreachable, v2_unreachable}`` when a side gave
no reply. Its texts hold only the FIRST LINE of each reply, and it called any pair
sharing a first character "prefix-only"; so every pair is re-classified here with
``core.compare.classify`` and the old verdict is kept under ``legacy``. Its state file is
``KEY=VAL`` lines under ``#`` comment lines.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import orjson

from shadow_burnin.core.compare import classify
from shadow_burnin.core.records import BUCKETS, Round, SideReply
from shadow_burnin.core.timefmt import iso_ms
from shadow_burnin.errors import InputError, LogError, StateError
from shadow_burnin.inputs import LEGACY_STATE_MAX_BYTES, open_input, read_input
from shadow_burnin.io.log.lines import open_log

LEGACY_KEYS = ("prompt_idx", "full_match", "v1_unreachable")
UNREACHABLE_ERROR = "legacy: unreachable"
STATE_INT_KEYS = (
    "rounds", "exact_matches", "prefix_only_matches", "no_match", "v1_unreachable",
    "v2_unreachable", "prefix_chars_total", "v1_ms_total", "v2_ms_total",
)
STATE_TS_KEYS = ("started_at", "last_ts")
# the old state's counters and the buckets (old verdicts) they count
STATE_COUNTERS = {
    "exact_matches": ("exact",),
    "prefix_only_matches": ("prefix-only",),
    "no_match": ("no-match",),
    "v1_unreachable": ("v1-unreachable", "both-unreachable"),
    "v2_unreachable": ("v2-unreachable", "both-unreachable"),
}
NOTE = ("legacy log (earlier bash tool): texts hold only the first line of each reply; "
        "re-classified with shadow-burnin's definitions")


class LegacyLineError(ValueError):
    """A legacy line that cannot be converted (the message says why)."""


def is_legacy_record(obj: Any) -> bool:
    """True for a decoded line of the earlier tool's log."""
    return isinstance(obj, dict) and "schema" not in obj and any(k in obj for k in LEGACY_KEYS)


def is_legacy_log(path: Path) -> bool:
    """True when the first non-blank line of ``path`` is a legacy record (False if unreadable)."""
    try:
        with open_input(path, LogError, "log") as fh:
            while line := fh.readline(1 << 20):  # bounded: a line is read at most 1 MiB
                if line.strip():
                    try:
                        return is_legacy_record(orjson.loads(line))
                    except orjson.JSONDecodeError:
                        return False
    except (OSError, InputError):
        return False
    return False


def convert_ts(text: Any) -> str:
    """``2026-04-22T08:59:45Z`` (or any ISO-8601; naive = UTC) → ``…T08:59:45.000Z``."""
    if not isinstance(text, str):
        raise LegacyLineError(f"'ts' is not a string: {text!r}")
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise LegacyLineError(f"'ts' is not an ISO-8601 time: {text!r}") from None
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return iso_ms(value.timestamp())


def _get(obj: dict[str, Any], key: str, kinds: tuple[type, ...], *, optional: bool = False
         ) -> Any:
    """``obj[key]`` if it has one of ``kinds`` (bools are not ints here); else LegacyLineError."""
    value = obj.get(key)
    if value is None and optional:
        return None
    is_bool = isinstance(value, bool)
    if not isinstance(value, kinds) or is_bool != (bool in kinds):
        want = " or ".join(k.__name__ for k in kinds)
        raise LegacyLineError(f"'{key}' missing or not {want}: {value!r}")
    return value


def _flags(obj: dict[str, Any]) -> tuple[bool, bool]:
    flags = [obj.get(f"{side}_unreachable", False) for side in ("v1", "v2")]
    for side, value in zip(("v1", "v2"), flags, strict=True):
        if not isinstance(value, bool):
            raise LegacyLineError(f"'{side}_unreachable' is not a boolean: {value!r}")
    return flags[0], flags[1]


def old_verdict(obj: dict[str, Any]) -> str:
    """The bucket the old tool gave: any shared first character counted as prefix-only."""
    down1, down2 = _flags(obj)
    if down1 or down2:
        return "both-unreachable" if down1 and down2 else ("v1" if down1 else "v2") + \
            "-unreachable"
    if _get(obj, "full_match", (bool,)):
        return "exact"
    chars = _get(obj, "prefix_match_chars", (int,))
    if chars < 0:
        raise LegacyLineError(f"'prefix_match_chars' is negative: {chars}")
    return "prefix-only" if chars > 0 else "no-match"


def _side(obj: dict[str, Any], side: str, down: bool) -> SideReply:
    ms = _get(obj, f"{side}_ms", (int, float), optional=True)
    return SideReply(
        text=None if down else _get(obj, f"{side}_text", (str,), optional=True),
        latency_ms=None if ms is None else float(ms),
        completion_tokens=_get(obj, f"{side}_tokens", (int,), optional=True),
        error=UNREACHABLE_ERROR if down else None,
    )


def convert_line(obj: Any, number: int) -> dict[str, Any]:
    """One legacy line → our round record dict (``Round.to_json()`` shape), round ``number``."""
    if not is_legacy_record(obj):
        raise LegacyLineError("not a line of the earlier tool's log "
                              "(no prompt_idx/full_match/v1_unreachable, or has schema)")
    down1, down2 = _flags(obj)
    idx = _get(obj, "prompt_idx", (int,))
    snippet = _get(obj, "prompt_snippet", (str,), optional=True)
    ts = convert_ts(obj.get("ts"))
    v1, v2 = _side(obj, "v1", down1), _side(obj, "v2", down2)
    legacy = {"prompt_snippet": snippet, "first_line_only": True,
              "old_full_match": None, "old_prefix_match_chars": None}
    if down1 or down2:
        bucket = old_verdict(obj)
        divergence, chars = None, None
    else:
        for side, reply in (("v1", v1), ("v2", v2)):
            if reply.text is None:
                raise LegacyLineError(f"'{side}_text' missing and '{side}_unreachable' not set")
        old_verdict(obj)  # full_match / prefix_match_chars must be valid
        legacy["old_full_match"] = obj["full_match"]
        legacy["old_prefix_match_chars"] = obj["prefix_match_chars"]
        cmp = classify(v1.text, v2.text)
        bucket, divergence, chars = cmp.bucket, cmp.divergence_byte, cmp.prefix_match_chars
    return Round(round=number, ts=ts, prompt_id=f"legacy-{idx}", category="legacy",
                 bucket=bucket, divergence_byte=divergence, prefix_match_chars=chars,
                 v1=v1, v2=v2, source="legacy", extra={"legacy": legacy}).to_json()


def iter_legacy(path: Path, first_round: int = 1
                ) -> Iterator[tuple[int, dict[str, Any], dict[str, Any]]]:
    """Yield ``(line_number, legacy_line, round_record)``; rounds numbered from ``first_round``.

    Blank lines are skipped; any other bad line raises LogError naming file and line.
    """
    fh = open_log(path)
    number = first_round
    with fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError:
                torn = "" if line.endswith(b"\n") else " (unterminated last line)"
                raise LogError(path, f"legacy line is not JSON{torn}", line=line_no) from None
            try:
                record = convert_line(obj, number)
            except LegacyLineError as exc:
                raise LogError(path, f"bad legacy line: {exc}", line=line_no) from None
            yield line_no, obj, record
            number += 1


def read_legacy_state(path: Path) -> dict[str, int | str]:
    """The old state file as a dict (counters as int); StateError on a bad line."""
    try:
        text = read_input(path, StateError, "legacy state",
                          max_bytes=LEGACY_STATE_MAX_BYTES).decode("utf-8")
    except UnicodeDecodeError:
        raise StateError(path, "legacy state file is not UTF-8 text") from None
    out: dict[str, int | str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = (part.strip() for part in line.partition("="))
        if not sep or not key or not key.replace("_", "").isalnum():
            raise StateError(path, f"not a KEY=VAL line: {raw[:60]!r}", line=number)
        if key in out:
            raise StateError(path, f"{key} given twice", line=number)
        if key in STATE_INT_KEYS:
            if not value.isdigit():
                raise StateError(path, f"{key} is not a non-negative integer: {value!r}",
                                 line=number)
            out[key] = int(value)
        elif key in STATE_TS_KEYS:
            try:
                convert_ts(value)
            except LegacyLineError:
                raise StateError(path, f"{key} is not an ISO-8601 time: {value!r}",
                                 line=number) from None
            out[key] = value
        else:
            out[key] = value
    if "rounds" not in out:
        raise StateError(path, "not a legacy state file (no rounds=N line)")
    return out


class LegacyTally(msgspec.Struct):
    """What a legacy log holds: old verdicts vs re-classified buckets, sums, time span."""

    rounds: int = 0
    old: dict[str, int] = msgspec.field(default_factory=lambda: dict.fromkeys(BUCKETS, 0))
    new: dict[str, int] = msgspec.field(default_factory=lambda: dict.fromkeys(BUCKETS, 0))
    moves: Counter[tuple[str, str]] = msgspec.field(default_factory=Counter)
    prefix_chars_changed: int = 0
    sums: dict[str, int | float] = msgspec.field(
        default_factory=lambda: {"prefix_chars_total": 0, "v1_ms_total": 0, "v2_ms_total": 0})
    first_ts: str | None = None
    last_ts: str | None = None

    def add(self, obj: dict[str, Any], record: dict[str, Any]) -> None:
        old, new = old_verdict(obj), record["bucket"]
        self.rounds += 1
        self.old[old] += 1
        self.new[new] += 1
        if old != new:
            self.moves[(old, new)] += 1
        legacy = record["legacy"]
        if legacy["old_prefix_match_chars"] is not None:
            self.sums["prefix_chars_total"] += legacy["old_prefix_match_chars"]
            if legacy["old_prefix_match_chars"] != record["prefix_match_chars"]:
                self.prefix_chars_changed += 1
        for side in ("v1", "v2"):
            self.sums[f"{side}_ms_total"] += obj.get(f"{side}_ms") or 0
        self.first_ts = self.first_ts or str(obj.get("ts"))
        self.last_ts = str(obj.get("ts"))

    @property
    def rebucketed(self) -> int:
        return sum(self.moves.values())

    def old_counter(self, key: str) -> int:
        """The value the old tool's state counter ``key`` would have for these rounds."""
        return sum(self.old[b] for b in STATE_COUNTERS[key])

    def to_json(self) -> dict[str, Any]:
        return {
            "rounds": self.rounds, "old_buckets": self.old, "buckets": self.new,
            "rebucketed": self.rebucketed,
            "moves": [{"old": o, "new": n, "rounds": c} for (o, n), c in sorted(
                self.moves.items(), key=lambda item: (-item[1], item[0]))],
            "prefix_chars_changed": self.prefix_chars_changed,
            "first_ts": self.first_ts, "last_ts": self.last_ts,
        }


def tally(path: Path) -> LegacyTally:
    """Read (and validate) the whole legacy log once."""
    out = LegacyTally()
    for _line, obj, record in iter_legacy(path):
        out.add(obj, record)
    return out


def _same_time(a: Any, b: Any) -> bool:
    try:
        return convert_ts(a) == convert_ts(b)
    except LegacyLineError:
        return False


def compare_state(state: dict[str, int | str], log: LegacyTally) -> dict[str, Any]:
    """The old state's counters next to what the log holds, with plain-words findings."""
    rows: list[dict[str, Any]] = [{"key": "rounds", "state": state.get("rounds"),
                                   "log": log.rounds}]
    rows += [{"key": k, "state": state.get(k), "log": log.old_counter(k)} for k in STATE_COUNTERS]
    rows += [{"key": k, "state": state.get(k), "log": v} for k, v in log.sums.items()]
    rows += [{"key": "started_at", "state": state.get("started_at"), "log": log.first_ts},
             {"key": "last_ts", "state": state.get("last_ts"), "log": log.last_ts}]
    notes: list[str] = []
    total = int(state["rounds"])
    if total > log.rounds:
        tail = " (the state's last_ts is the log's last round: the log is the tail of that run)" \
            if _same_time(state.get("last_ts"), log.last_ts) else ""
        notes.append(f"the state counts {total} rounds, the log holds {log.rounds}: "
                     f"{total - log.rounds} rounds are not in the log{tail}")
    elif total < log.rounds:
        notes.append(f"the state counts only {total} rounds but the log holds {log.rounds}")
    if all(isinstance(state.get(k), int) for k in STATE_COUNTERS):
        extra = sum(int(state[k]) for k in STATE_COUNTERS) - total
        if extra > 0:
            notes.append(f"the state's counters sum to {total + extra}, {extra} more than its "
                         f"rounds: consistent with {extra} both-unreachable round(s) counted "
                         "under both v1_unreachable and v2_unreachable")
        elif extra < 0:
            notes.append(f"the state's counters sum to {total + extra}, {-extra} short of "
                         "its rounds")
    for row in rows[1:1 + len(STATE_COUNTERS)]:
        if not isinstance(row["state"], int):
            notes.append(f"{row['key']}: missing from the state")
        elif total == log.rounds and row["state"] != row["log"]:
            notes.append(f"{row['key']}: state {row['state']}, log {row['log']}")
        elif row["state"] < row["log"]:
            notes.append(f"{row['key']}: state {row['state']} is below the log's {row['log']}")
    return {"rows": rows, "notes": notes}
