"""PPL / KL math on hand-computable cases."""

from __future__ import annotations

import math

import pytest

from shadow_burnin.core.ppl import (
    SidePpl,
    SideRun,
    TokenScore,
    kl_union,
    paired,
    run_record,
    side_ppl,
    top1,
    windows,
)

L = math.log


def ts(token: str, p: float, top: dict[str, float]) -> TokenScore:
    return TokenScore(token, L(p), {k: L(v) for k, v in top.items()})


def test_side_ppl() -> None:
    r = side_ppl([L(0.5)] * 10)
    assert r.tokens == 10 and r.ppl == pytest.approx(2.0) and r.mean_nll == pytest.approx(L(2))
    assert r.nll_se == pytest.approx(0.0)
    mixed = side_ppl([L(0.5), L(0.25)])
    assert mixed.ppl == pytest.approx(math.sqrt(8))  # geometric mean of 2 and 4
    assert side_ppl([]) == SidePpl(0, None, None)


def test_kl_identical_is_zero() -> None:
    a = ts("x", 0.5, {"x": 0.5, "y": 0.3, "z": 0.1})
    assert kl_union(a, a) == 0.0


def test_kl_full_distribution_is_exact() -> None:
    a = ts("x", 0.5, {"x": 0.5, "y": 0.5})
    b = ts("x", 0.25, {"x": 0.25, "y": 0.75})
    exact = 0.5 * L(0.5 / 0.25) + 0.5 * L(0.5 / 0.75)
    assert kl_union(a, b) == pytest.approx(exact, abs=1e-8)
    reverse = 0.25 * L(0.25 / 0.5) + 0.75 * L(0.75 / 0.5)
    assert kl_union(b, a) == pytest.approx(reverse, abs=1e-8)


def test_kl_union_with_missing_tokens_and_tail() -> None:
    # a lists x, y; b lists x, z. Each side's missing token gets
    # min(its smallest listed p, left-over / (missing + 1)) = min(0.3, 0.1 / 2) = 0.05,
    # and the tail the rest (0.05).
    a = ts("x", 0.6, {"x": 0.6, "y": 0.3})
    b = ts("x", 0.6, {"x": 0.6, "z": 0.3})
    expected = 0.3 * L(0.3 / 0.05) + 0.05 * L(0.05 / 0.3)
    assert kl_union(a, b) == pytest.approx(expected, abs=1e-8)


def test_kl_uses_the_actual_token_probability_when_outside_top_k() -> None:
    # the actual token "w" is outside both lists, but each side reports its probability
    a = ts("w", 0.02, {"x": 0.9})
    b = ts("w", 0.08, {"x": 0.9})
    pw = 0.02 * L(0.02 / 0.08)
    tail = 0.08 * L(0.08 / 0.02)
    assert kl_union(a, b) == pytest.approx(pw + tail, abs=1e-8)


def test_top1() -> None:
    assert top1(ts("x", 0.1, {"a": 0.2, "b": 0.7})) == "b"
    assert top1(TokenScore("x", -1.0)) is None


def test_paired_figures() -> None:
    v1 = [ts("a", 0.5, {"a": 0.5, "b": 0.4}), ts("b", 0.4, {"b": 0.4, "a": 0.3}),
          ts("c", 0.2, {"d": 0.6, "c": 0.2})]
    v2 = [ts("a", 0.25, {"a": 0.25, "b": 0.6}), ts("b", 0.4, {"b": 0.4, "a": 0.3}),
          ts("c", 0.2, {"d": 0.6, "c": 0.2})]
    p = paired(v1, v2)
    assert p is not None and (p.positions, p.mismatched) == (3, 0)
    d = [L(0.5) - L(0.25), 0.0, 0.0]  # NLL(v2) − NLL(v1) per position
    mean = sum(d) / 3
    se = math.sqrt(sum((x - mean) ** 2 for x in d) / 2 / 3)
    assert p.nll_diff_mean == pytest.approx(mean, abs=1e-7)
    assert p.nll_diff_se == pytest.approx(se, abs=1e-7)
    assert p.same_top1_rate == pytest.approx(2 / 3, abs=1e-6)  # position 1: a vs b
    assert p.same_top1_se == pytest.approx(math.sqrt(2 / 9 / 3), abs=1e-6)
    assert p.rms_dp == pytest.approx(math.sqrt(0.25 ** 2 / 3), abs=1e-6)
    assert p.kld_mean > 0 and p.kld_max == pytest.approx(p.kld_mean * 3, abs=1e-6)


def test_paired_needs_the_same_tokens() -> None:
    a = [ts("a", 0.5, {}), ts("b", 0.5, {})]
    assert paired(a, a[:1]) is None  # other tokenization: not comparable
    assert paired([], []) is None
    other = [ts("a", 0.5, {}), ts("B", 0.5, {})]
    p = paired(a, other)
    assert p.positions == 1 and p.mismatched == 1 and p.same_top1_rate is None


@pytest.mark.parametrize(("n", "size", "expected"), [
    (1134, 1024, [(0, 1024)]), (2048, 1024, [(0, 1024), (1024, 2048)]),
    (100, 1024, [(0, 100)]), (0, 1024, []), (10, 1, []),
])
def test_windows(n: int, size: int, expected: list) -> None:
    assert windows(n, size) == expected


def test_run_record() -> None:
    sides = {"v1": SideRun("http://a", "llama", side_ppl([L(0.5)]), 1.0, 3),
             "v2": SideRun("http://b", "echo", side_ppl([L(0.25)]), 2.0, 1)}
    rec = run_record("2026-01-01T00:00:00.000Z", {"name": "t"}, 1024, 10, 1, sides, None)
    assert rec["kind"] == "ppl" and rec["ppl_delta"] == pytest.approx(2.0)
    assert rec["v1"]["method"] == "llama" and rec["v2"]["seconds"] == 2.0
    assert rec["paired"] is None
