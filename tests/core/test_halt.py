"""The no-match halt detector: sliding window over log timestamps (pure)."""

from __future__ import annotations

import random
from array import array
from collections import Counter, deque

from shadow_burnin.core.halt import (
    ACK_EVENT,
    HALT_EVENT,
    SLOTS,
    HaltDetector,
    HaltRule,
    ack_event,
    detect,
    epoch,
    halt_status,
)
from shadow_burnin.core.timefmt import iso_ms as iso

T0 = 1_800_000_000.0


def rnd(n: int, t: float, bucket: str, prompt: str = "p") -> dict:
    return {"round": n, "ts": iso(t), "bucket": bucket, "prompt_id": prompt, "category": "c"}


def stream(buckets: list[str], step: float = 1.0, start: float = T0) -> list[dict]:
    return [rnd(i + 1, start + i * step, b, f"p{i % 3}") for i, b in enumerate(buckets)]


def test_iso_epoch_roundtrip() -> None:
    assert iso(T0 + 0.25) == "2027-01-15T08:00:00.250Z"
    assert epoch(iso(T0 + 0.25)) == T0 + 0.25


def test_triggers_once_rate_passes_threshold() -> None:
    # diverging from round 41 on: at round r the window holds r rounds, r − 40 no-match;
    # r − 40 > 0.2 r first at r = 51
    records = stream(["exact"] * 40 + ["no-match"] * 40)
    det = HaltDetector(HaltRule())
    fired = [(r["round"], t) for r in records if (t := det.feed(r)) is not None]
    assert [n for n, _ in fired] == [51]
    trig = fired[0][1]
    assert (trig.window.parity_rounds, trig.window.no_match) == (51, 11)
    assert trig.window.rate > 0.2 and det.active
    event = trig.to_event("flag")
    assert event["kind"] == "event" and event["event"] == HALT_EVENT
    assert event["ts"] == records[50]["ts"] and event["window"]["threshold"] == 0.2
    worst = event["worst_prompts"]
    assert sum(w["no_match"] for w in worst) == 11 and worst[0]["no_match"] >= worst[-1]["no_match"]


def test_needs_min_rounds() -> None:
    # 100 % no-match but only 29 parity rounds in the window: no halt
    det = HaltDetector(HaltRule(min_rounds=30))
    assert all(det.feed(r) is None for r in stream(["no-match"] * 29))
    assert det.feed(rnd(30, T0 + 29, "no-match")) is not None


def test_unreachable_rounds_do_not_count() -> None:
    det = HaltDetector(HaltRule(min_rounds=10))
    recs = stream(["v2-unreachable"] * 50 + ["exact"] * 8 + ["no-match"] * 2)
    assert all(det.feed(r) is None for r in recs)  # 2/10 = 20 % is not above 20 %
    assert det.window().parity_rounds == 10


def test_window_slides_on_timestamps() -> None:
    cfg = HaltRule(window_s=100.0, min_rounds=20, threshold=0.2)
    # 3 no-match rounds long ago, then only exact rounds: the old ones leave the window
    recs = stream(["no-match"] * 3, step=1.0) + stream(["exact"] * 50, step=10.0, start=T0 + 5)
    det = HaltDetector(cfg)
    assert all(det.feed(r) is None for r in recs)  # never 20 rounds in 100 s
    w = det.window()
    assert w.no_match == 0 and w.parity_rounds == 10  # (t − 100, t] at 10 s spacing
    assert w.until - w.since == 90


def test_spike_inside_a_long_run() -> None:
    cfg = HaltRule(window_s=60.0, min_rounds=30, threshold=0.2)
    buckets = ["exact"] * 300 + ["no-match"] * 20 + ["exact"] * 300
    fired = detect(stream(buckets, step=1.0), cfg)
    # the window is the last 60 s: no-match from round 301 on; 13 of 60 > 20 % at round 313
    assert fired[0].round == 313 and fired[0].window.parity_rounds == 60
    # detect() acknowledges at once: the 7 no-match rounds after 313 are 7 of the next
    # 30 (23 %), a second halt at round 343; nothing after
    assert [t.round for t in fired] == [313, 343]


def test_acknowledge_forgives_the_window() -> None:
    cfg = HaltRule(min_rounds=30)
    records = stream(["no-match"] * 40 + ["exact"] * 100)
    det = HaltDetector(cfg)
    trig = [t for r in records[:35] if (t := det.feed(r))]
    assert len(trig) == 1 and trig[0].round == 30
    det.acknowledge(epoch(records[34]["ts"]) + 0.5)
    assert not det.active and det.window() is None
    # after the ack: 5 more no-match then exact rounds: 5 of ≥ 30 is not a spike
    assert all(det.feed(r) is None for r in records[35:])


def test_restored_detector_does_not_fire_twice() -> None:
    det = HaltDetector(HaltRule(), active=True)
    assert all(det.feed(r) is None for r in stream(["no-match"] * 100))
    assert det.active


def test_halt_status_folds_events_in_order() -> None:
    halt = {"kind": "event", "event": HALT_EVENT, "ts": iso(T0), "round": 51}
    assert halt_status([]).active is False
    assert halt_status([halt]).active is True
    ack = ack_event(iso(T0 + 60), "known tokenizer change", halt, by="ops")
    assert ack["event"] == ACK_EVENT and ack["halt_round"] == 51 and ack["by"] == "ops"
    st = halt_status([halt, {"kind": "round"}, ack])
    assert not st.active and st.since == T0 + 60 and (st.halts, st.acks) == (1, 1)
    again = halt_status([halt, ack, dict(halt, round=90)])
    assert again.active and again.halt["round"] == 90


class Reference:
    """The per-round definition (one tuple per parity round, unbounded): what the slotted
    detector must equal whenever no two rounds share a slot."""

    def __init__(self, cfg: HaltRule) -> None:
        self.cfg, self.active, self.since, self.nm = cfg, False, None, 0
        self.rounds: deque[tuple[float, bool, str, str]] = deque()

    def feed(self, r: dict) -> tuple | None:
        t = epoch(r["ts"])
        if self.since is not None and t < self.since:
            return None
        if r["bucket"] in ("exact", "prefix-only", "no-match"):
            self.rounds.append((t, r["bucket"] == "no-match", r["prompt_id"], r["category"]))
            self.nm += self.rounds[-1][1]
        while self.rounds and self.rounds[0][0] <= t - self.cfg.window_s:
            self.nm -= self.rounds.popleft()[1]
        n, nm = len(self.rounds), self.nm
        if self.active or n < self.cfg.min_rounds or nm <= self.cfg.threshold * n:
            return None
        self.active = True
        seen, bad, cat = Counter(), Counter(), {}
        for _t, b, p, c in self.rounds:
            seen[p] += 1
            bad[p] += b
            cat[p] = c
        ranked = sorted((p for p in bad if bad[p]), key=lambda p: (-bad[p], p))
        return (r["round"], n, nm, [(p, cat[p], bad[p], seen[p]) for p in ranked[:5]])

    def acknowledge(self, t: float) -> None:
        self.active = False
        self.since = t if self.since is None else max(self.since, t)
        while self.rounds and self.rounds[0][0] < self.since:
            self.nm -= self.rounds.popleft()[1]


def _random_run(rng: random.Random, n: int, min_gap: float, max_gap: float) -> list[dict]:
    out, t = [], T0 + rng.random() * 100
    p_bad = 0.05
    for i in range(n):
        if rng.random() < 0.02:  # spikes come and go
            p_bad = rng.choice([0.0, 0.05, 0.3, 0.8])
        u = rng.random()
        bucket = ("v2-unreachable" if u < 0.05 else "no-match" if u < 0.05 + p_bad
                  else rng.choice(["exact", "exact", "prefix-only"]))
        pid = f"p{rng.randrange(12)}"
        out.append({"round": i + 1, "ts": iso(t), "bucket": bucket, "prompt_id": pid,
                    "category": f"c{int(pid[1:]) % 3}"})
        t += rng.uniform(min_gap, max_gap)
    return out


def test_equals_the_per_round_definition_when_rounds_do_not_share_a_slot() -> None:
    # window 360 s → 0.1 s slots; rounds ≥ 0.15 s apart: never two in one slot, so the
    # slotted detector must be exact (halts, windows, worst prompts), acks included
    for seed in range(6):
        rng = random.Random(seed)
        cfg = HaltRule(window_s=360.0, min_rounds=30, threshold=0.2)
        det, ref = HaltDetector(cfg), Reference(cfg)
        halts = 0
        for r in _random_run(rng, 4000, 0.15, 3.0):
            got, want = det.feed(r), ref.feed(r)
            halts += got is not None
            assert (got is None) == (want is None), (seed, r["round"])
            if got is not None:
                w = got.window
                worst = [(x["prompt_id"], x["category"], x["no_match"], x["parity_rounds"])
                         for x in got.worst_prompts]
                assert (got.round, w.parity_rounds, w.no_match, worst) == want
                ack = epoch(r["ts"]) + rng.choice([0.0, 0.001, 5.0])
                det.acknowledge(ack)
                ref.acknowledge(ack)
            w = det.window()
            n = len(ref.rounds)
            assert (w.parity_rounds if w else 0) == n
            assert (w.no_match if w else 0) == ref.nm
        assert halts >= 3, seed


def test_memory_is_bounded_at_any_round_rate() -> None:
    # 1 000 rounds/s for 3 windows: the window holds ≤ SLOTS + 2 entries, not 60 000 rounds
    cfg = HaltRule(window_s=20.0, min_rounds=30, threshold=0.5)
    det = HaltDetector(cfg)
    for i in range(60_000):
        t = T0 + i / 1000
        det.feed({"round": i + 1, "ts": "", "bucket": "no-match" if i % 5 == 0 else "exact",
                  "prompt_id": f"p{i % 16}", "category": "c"}, t)
    assert len(det._slots) <= SLOTS + 2
    assert max(len(list(s.prompts())) for s in det._slots) <= 16
    # all but the newest entry hold their per-prompt counts packed (12 bytes a prompt)
    assert all(isinstance(s.counts, array) for s in list(det._slots)[:-1])
    w = det.window()
    assert 20_000 <= w.parity_rounds <= 20_000 + 20.0 / SLOTS * 1000 + 1
    assert abs(w.no_match - w.parity_rounds / 5) <= 1


def test_shared_slots_stay_within_one_slot_of_the_window() -> None:
    # many rounds per slot: the count lies between the exact windows W and W + slot width
    cfg = HaltRule(window_s=36.0, min_rounds=10**9)  # 10 ms slots; never triggers
    rng = random.Random(3)
    run = _random_run(rng, 20_000, 0.0, 0.004)
    det = HaltDetector(cfg)
    narrow, wide = Reference(cfg), Reference(HaltRule(window_s=36.0 + 36.0 / SLOTS,
                                                        min_rounds=10**9))
    for r in run:
        det.feed(r)
        narrow.feed(r)
        wide.feed(r)
        n = det.window().parity_rounds
        assert len(narrow.rounds) <= n <= len(wide.rounds)


def test_on_regression_counts_only_regression_verdicts() -> None:
    # 40 exact, then no-match rounds: near-ties (numeric noise) and, from round 61 on,
    # regressions. On "no-match" the near-ties halt; on "regression" only the regressions.
    records = stream(["exact"] * 40 + ["no-match"] * 60)
    for r in records[40:]:
        r["forensics"] = {"verdict": "regression" if r["round"] > 60 else "near-tie"}
    records[45]["forensics"] = None  # no forensics: not a regression
    det = HaltDetector(HaltRule())
    assert [r["round"] for r in records if det.feed(r)] == [51]
    det = HaltDetector(HaltRule(on="regression"))
    fired = [t for r in records if (t := det.feed(r)) is not None]
    # at round r the window holds r parity rounds, r − 60 regressions: r − 60 > 0.2 r at 76
    assert [t.round for t in fired] == [76]
    event = fired[0].to_event("flag")
    assert event["window"]["on"] == "regression" and event["window"]["regression"] == 16
    assert "no_match" not in event["window"]
    assert sum(w["regression"] for w in event["worst_prompts"]) == 16


def test_on_no_match_event_says_so() -> None:
    det = HaltDetector(HaltRule())
    fired = [t for r in stream(["no-match"] * 30) if (t := det.feed(r)) is not None]
    assert fired[0].to_event("flag")["window"]["on"] == "no-match"
