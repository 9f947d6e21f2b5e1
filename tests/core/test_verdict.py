"""Token verdicts, prefix-only causes and re-fire outcomes on synthetic logprobs."""

from __future__ import annotations

import math

import pytest

from shadow_burnin.core.outcomes import NO_CODES, forensic_codes, prefix_cause, refire_outcome
from shadow_burnin.core.verdict import (
    NOISE_SCALE,
    SAME_PATH_SCALE,
    Alt,
    Thresholds,
    Token,
    first_divergence,
    same_token,
    token_verdict,
    token_window,
)


def tok(text: str, lp: float | None, *alts: tuple[str, float], raw: bytes | None = None
        ) -> Token:
    """A token whose top-K is itself plus ``alts``."""
    top = () if lp is None else (Alt(text, lp, raw), *(Alt(t, p) for t, p in alts))
    return Token(text, lp, raw, top)


def stream(*texts: str, lp: float = -0.01) -> list[Token]:
    return [tok(t, lp) for t in texts]


SHARED = stream("The", " cat", " sat")


def diverge(a: Token, b: Token, prefix1: list[Token] = SHARED,
            prefix2: list[Token] | None = None) -> tuple[list[Token], list[Token]]:
    return [*prefix1, a, tok(" x", -0.1)], [*(prefix2 or prefix1), b, tok(" y", -0.1)]


FIXED = Thresholds(tau_tie=0.1, tau_drift=0.05, tau_regress=0.5)  # the rule, set by hand
CASES = [
    # id, v1's token at d, v2's token at d, verdict, reason fragment
    ("near-tie", tok(" on", -0.70, (" in", -0.72)), tok(" in", -0.69, (" on", -0.70)),
     "near-tie", "swing"),
    ("b-missing-in-v1", tok(" on", -0.1, (" at", -3.0)), tok(" in", -0.5, (" on", -0.6)),
     "regression", "not in v1's top"),
    ("a-missing-in-v2", tok(" on", -0.5, (" in", -0.6)), tok(" in", -0.1, (" at", -3.0)),
     "regression", "not in v2's top"),
    ("big-swing", tok(" on", -0.2, (" in", -1.0)), tok(" in", -0.3, (" on", -0.5)),
     "regression", "swing 1 > 0.5"),
    ("middle-swing", tok(" on", -0.5, (" in", -0.7)), tok(" in", -0.5, (" on", -0.6)),
     "unexplained", "between 0.1 and 0.5"),
]


@pytest.mark.parametrize(("name", "a", "b", "verdict", "reason"), CASES,
                         ids=[c[0] for c in CASES])
def test_verdict_branches(name: str, a: Token, b: Token, verdict: str, reason: str) -> None:
    t1, t2 = diverge(a, b)
    v = token_verdict(t1, t2, FIXED)
    assert v.verdict == verdict, v
    assert reason in v.reason
    assert v.divergence_token == 3 and v.a == a.token and v.b == b.token
    assert v.prefix_drift == 0.0


def test_swing_and_margins_are_exact() -> None:
    t1, t2 = diverge(tok(" on", -0.70, (" in", -0.72)), tok(" in", -0.69, (" on", -0.70)))
    v = token_verdict(t1, t2)
    assert v.margin_v1 == pytest.approx(0.02)
    assert v.margin_v2 == pytest.approx(0.01)
    assert v.swing == pytest.approx(0.03)
    assert v.b_in_v1_top and v.a_in_v2_top


def test_missing_token_gives_swing_lower_bound() -> None:
    t1, t2 = diverge(tok(" on", -0.1, (" at", -3.0)), tok(" in", -0.5, (" on", -0.6)))
    v = token_verdict(t1, t2)
    assert v.swing is None and v.swing_min == pytest.approx(2.9 + 0.1)
    assert v.b_in_v1_top is False and "swing_min" in v.to_json()


@pytest.mark.parametrize(("drift", "verdict"), [(0.04, "near-tie"), (0.07, "unexplained"),
                                                (0.2, "regression")])
def test_prefix_drift_thresholds(drift: float, verdict: str) -> None:
    p1 = stream("The", " cat", " sat", lp=-1.0)
    p2 = [tok("The", -1.0), tok(" cat", -1.0 - drift), tok(" sat", -1.0)]
    t1, t2 = diverge(tok(" on", -0.70, (" in", -0.72)), tok(" in", -0.69, (" on", -0.70)),
                     p1, p2)
    v = token_verdict(t1, t2, FIXED)
    assert v.prefix_drift == pytest.approx(drift)
    assert v.verdict == verdict


def test_divergence_at_token_zero() -> None:
    t1 = [tok("A", -0.3, ("B", -0.35)), tok("!", -0.1)]
    t2 = [tok("B", -0.3, ("A", -0.32)), tok("?", -0.1)]
    v = token_verdict(t1, t2)
    assert v.divergence_token == 0 and v.prefix_drift == 0.0 and v.verdict == "near-tie"


def test_divergence_at_the_last_token() -> None:
    t1 = [*SHARED, tok(".", -0.4, ("!", -0.42))]
    t2 = [*SHARED, tok("!", -0.4, (".", -0.43))]
    v = token_verdict(t1, t2)
    assert v.divergence_token == 3 and v.verdict == "near-tie"
    window = token_window(t1, 3)
    assert [w["i"] for w in window] == [1, 2, 3]


def test_tokens_that_differ_but_decode_to_the_same_text() -> None:
    # different segmentation of the same text: the first token is where they differ
    t1 = [tok(" hel", -0.5, (" hello", -0.55)), tok("lo", -0.01), tok(" you", -0.2)]
    t2 = [tok(" hello", -0.5, (" hel", -0.53)), tok(" there", -0.2)]
    v = token_verdict(t1, t2)
    assert v.divergence_token == 0 and v.a == " hel" and v.b == " hello"
    assert v.verdict == "near-tie"
    # same text, one side without bytes: still the same token
    assert same_token(Token("é", -1.0, "é".encode()), Token("é", -1.0))
    # same text but different bytes (two byte-level tokens shown as U+FFFD): different
    assert not same_token(Token("\ufffd", -1, b"\xe6"), Token("\ufffd", -1, b"\xe7"))


def test_multibyte_character_split_across_tokens() -> None:
    # 日 = e6 97 a5, 本 = e6 9c ac; byte-level tokens: the first byte agrees
    e6 = b"\xe6"
    t1 = [tok("\ufffd", -0.1, raw=e6), tok("\ufffd", -0.6, ("\ufffd", -0.65), raw=b"\x97\xa5")]
    t2 = [tok("", -0.1, raw=e6), tok("\ufffd", -0.6, raw=b"\x9c\xac")]
    t1[1] = Token("\ufffd", -0.6, b"\x97\xa5", (Alt("\ufffd", -0.6, b"\x97\xa5"),
                                                 Alt("\ufffd", -0.62, b"\x9c\xac")))
    t2[1] = Token("\ufffd", -0.6, b"\x9c\xac", (Alt("\ufffd", -0.6, b"\x9c\xac"),
                                                 Alt("\ufffd", -0.61, b"\x97\xa5")))
    v = token_verdict(t1, t2)
    assert v.divergence_token == 1 and v.verdict == "near-tie"
    window = token_window(t1, 1)
    assert window[1]["x"] == "97a5" and window[0]["x"] == "e6"
    # a server without bytes gives "" for the partial token: still matches e6
    assert first_divergence([Token("", -0.1)], [Token("\ufffd", -0.1, e6)]) is None


@pytest.mark.parametrize("missing", ["v1", "v2"])
def test_missing_logprobs_on_one_side(missing: str) -> None:
    t = stream("a", "b")
    v = token_verdict(None if missing == "v1" else t, [] if missing == "v2" else t)
    assert v.verdict == "unexplained" and v.reason == f"no logprobs from {missing}"


def test_missing_logprob_or_top_at_divergence() -> None:
    t1, t2 = diverge(Token(" on", None), tok(" in", -0.1))
    assert "no logprob from v1" in token_verdict(t1, t2).reason
    t1, t2 = diverge(tok(" on", -0.1), Token(" in", -0.1))
    assert "no top-K alternatives from v2" in token_verdict(t1, t2).reason


def test_streams_that_agree_or_end_early_are_unexplained() -> None:
    assert token_verdict(SHARED, SHARED).verdict == "unexplained"
    v = token_verdict(SHARED, SHARED[:2])
    assert v.verdict == "unexplained" and v.divergence_token == 2 and "v2's tokens end" in v.reason


def test_thresholds_are_configurable() -> None:
    t1, t2 = diverge(tok(" on", -0.5, (" in", -0.7)), tok(" in", -0.5, (" on", -0.6)))
    assert token_verdict(t1, t2, Thresholds(tau_tie=0.3)).verdict == "near-tie"
    assert token_verdict(t1, t2, Thresholds(tau_tie=0.1, tau_regress=0.2)).verdict == \
        "regression"


def test_token_window_is_compact() -> None:
    t = [tok(str(i), -0.123456789, ("z", -2.0)) for i in range(10)]
    window = token_window(t, 5)
    assert [w["i"] for w in window] == [3, 4, 5, 6, 7]
    assert window[0] == {"i": 3, "t": "3", "lp": -0.12346, "top": [["3", -0.12346], ["z", -2.0]]}


@pytest.mark.parametrize(("f1", "f2", "cause", "shorter"), [
    ("length", "stop", "length", "v1"),
    ("length", "length", "length", "v1"),
    ("stop", "length", "stop", "v1"),
    ("stop", "stop", "stop", "v1"),
    (None, "stop", "unexplained", "v1"),
])
def test_prefix_cause(f1: str | None, f2: str | None, cause: str, shorter: str) -> None:
    got = prefix_cause("abc", f1, "abcdef", f2)
    assert (got.cause, got.shorter) == (cause, shorter)
    flipped = prefix_cause("abcdef", f2, "abc", f1)
    assert (flipped.cause, flipped.shorter) == (cause, "v2")


@pytest.mark.parametrize(("again1", "again2", "outcome"), [
    (["A"], ["B"], "reproducible"),
    (["A2"], ["B"], "flaky-v1"),
    (["A"], ["B2"], "flaky-v2"),
    (["A2"], ["B2"], "flaky-both"),
    ([None], ["B"], "incomplete"),
    (["A", "A"], ["B", "B3"], "flaky-v2"),
])
def test_refire_outcome(again1: list[str | None], again2: list[str | None],
                        outcome: str) -> None:
    got = refire_outcome("A", "B", again1, again2)
    assert got.outcome == outcome
    js = got.to_json()
    assert js["n"] == len(again1)
    if outcome.startswith("flaky"):
        assert js["texts"]


def test_refire_counts_pairs_that_now_agree() -> None:
    got = refire_outcome("A", "B", ["C"], ["C"])
    assert got.outcome == "flaky-both" and got.pair_exact == 1


def test_forensic_codes() -> None:
    assert forensic_codes(None, None) == NO_CODES
    assert forensic_codes({"verdict": "regression", "divergence_token": 4},
                          {"outcome": "flaky-v2"}) == (2, 0, 3, 4)
    assert forensic_codes({"cause": "stop"}, None) == (0, 2, 0, -1)


def test_a_side_that_does_not_pick_its_own_top_token_is_a_regression() -> None:
    # measured on llama-cpp-python 0.3.36 (repeat_penalty 1.1 by default): it chose
    # " France" while its own logprobs rank " the" 0.76 nats higher
    t1, t2 = diverge(tok(" the", -0.925, (" France", -1.601)),
                     Token(" France", -1.624, None, (Alt(" the", -0.860),
                                                     Alt(" France", -1.624))))
    v = token_verdict(t1, t2)
    assert v.verdict == "regression" and "v2 chose ' France'" in v.reason
    assert v.swing is not None and v.swing < 0.1  # the rules alone would say near-tie


def test_merged_byte_pieces_at_the_divergence_are_unexplained() -> None:
    a = Token("\U0001fabc", -2.5, "\U0001fabc".encode(), (Alt("\ufffd", -2.5, b"\xbc"),),
              merged=True)
    b = Token("\U0001facE", -2.4, "\U0001face".encode(), (Alt("\ufffd", -2.4, b"\x8e"),),
              merged=True)
    v = token_verdict([a], [b])
    assert v.verdict == "unexplained" and "byte pieces" in v.reason


def test_default_thresholds_follow_the_noise_model() -> None:
    """τ_tie / τ_regress: the swings one kernel's numeric noise (Laplace margin moves of
    mean SAME_PATH_SCALE, half the run-level prior) exceeds at 1 % and 0.01 % of tokens."""
    th = Thresholds()
    assert SAME_PATH_SCALE == NOISE_SCALE / 2
    assert math.exp(-th.tau_tie / SAME_PATH_SCALE) == pytest.approx(0.01, rel=0.01)
    assert math.exp(-th.tau_regress / SAME_PATH_SCALE) == pytest.approx(1e-4, rel=0.01)
    # a flip beyond one kernel's noise but not far (measured: swing 0.74 on another
    # kernel) is unexplained, not a regression; a 1.2 swing is
    t1, t2 = diverge(tok(" on", -0.5, (" in", -0.9)), tok(" in", -0.5, (" on", -0.84)))
    assert token_verdict(t1, t2).verdict == "unexplained"
    t1, t2 = diverge(tok(" on", -0.2, (" in", -0.8)), tok(" in", -0.2, (" on", -0.8)))
    assert token_verdict(t1, t2).verdict == "regression"
    t1, t2 = diverge(tok(" on", -0.7, (" in", -0.9)), tok(" in", -0.69, (" on", -0.9)))
    assert token_verdict(t1, t2).verdict == "near-tie"
