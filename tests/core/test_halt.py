"""The no-match halt detector: sliding window over log timestamps (pure)."""

from __future__ import annotations

from shadow_burnin.core.halt import (
    ACK_EVENT,
    HALT_EVENT,
    HaltConfig,
    HaltDetector,
    ack_event,
    detect,
    epoch,
    halt_status,
    iso,
)

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
    det = HaltDetector(HaltConfig())
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
    det = HaltDetector(HaltConfig(min_rounds=30))
    assert all(det.feed(r) is None for r in stream(["no-match"] * 29))
    assert det.feed(rnd(30, T0 + 29, "no-match")) is not None


def test_unreachable_rounds_do_not_count() -> None:
    det = HaltDetector(HaltConfig(min_rounds=10))
    recs = stream(["v2-unreachable"] * 50 + ["exact"] * 8 + ["no-match"] * 2)
    assert all(det.feed(r) is None for r in recs)  # 2/10 = 20 % is not above 20 %
    assert det.window().parity_rounds == 10


def test_window_slides_on_timestamps() -> None:
    cfg = HaltConfig(window_s=100.0, min_rounds=20, threshold=0.2)
    # 3 no-match rounds long ago, then only exact rounds: the old ones leave the window
    recs = stream(["no-match"] * 3, step=1.0) + stream(["exact"] * 50, step=10.0, start=T0 + 5)
    det = HaltDetector(cfg)
    assert all(det.feed(r) is None for r in recs)  # never 20 rounds in 100 s
    w = det.window()
    assert w.no_match == 0 and w.parity_rounds == 10  # (t − 100, t] at 10 s spacing
    assert w.until - w.since == 90


def test_spike_inside_a_long_run() -> None:
    cfg = HaltConfig(window_s=60.0, min_rounds=30, threshold=0.2)
    buckets = ["exact"] * 300 + ["no-match"] * 20 + ["exact"] * 300
    fired = detect(stream(buckets, step=1.0), cfg)
    # the window is the last 60 s: no-match from round 301 on; 13 of 60 > 20 % at round 313
    assert fired[0].round == 313 and fired[0].window.parity_rounds == 60
    # detect() acknowledges at once: the 7 no-match rounds after 313 are 7 of the next
    # 30 (23 %), a second halt at round 343; nothing after
    assert [t.round for t in fired] == [313, 343]


def test_acknowledge_forgives_the_window() -> None:
    cfg = HaltConfig(min_rounds=30)
    records = stream(["no-match"] * 40 + ["exact"] * 100)
    det = HaltDetector(cfg)
    trig = [t for r in records[:35] if (t := det.feed(r))]
    assert len(trig) == 1 and trig[0].round == 30
    det.acknowledge(epoch(records[34]["ts"]) + 0.5)
    assert not det.active and det.window() is None
    # after the ack: 5 more no-match then exact rounds: 5 of ≥ 30 is not a spike
    assert all(det.feed(r) is None for r in records[35:])


def test_restored_detector_does_not_fire_twice() -> None:
    det = HaltDetector(HaltConfig(), active=True)
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
