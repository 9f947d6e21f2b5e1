"""Classification against a simple reference, on random multi-byte strings."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from shadow_burnin.core.compare import classify, common_prefix_len

# letters from several scripts, combining marks, emoji and ZWJ: multi-byte UTF-8
ALPHABET = st.sampled_from(list("ab\n é日本語\u0301\u200d👍🏽😀ßΩ\t"))
TEXT = st.text(alphabet=ALPHABET, max_size=40)


def reference(a: str, b: str) -> tuple[str, int | None, int]:
    ab, bb = a.encode(), b.encode()
    byte = 0
    while byte < len(ab) and byte < len(bb) and ab[byte] == bb[byte]:
        byte += 1
    chars = 0
    while chars < len(a) and chars < len(b) and a[chars] == b[chars]:
        chars += 1
    if ab == bb:
        return "exact", None, len(a)
    if ab.startswith(bb) or bb.startswith(ab):
        return "prefix-only", byte, chars
    return "no-match", byte, chars


@settings(max_examples=600)
@given(TEXT, TEXT)
def test_matches_reference(a: str, b: str) -> None:
    got = classify(a, b)
    assert (got.bucket, got.divergence_byte, got.prefix_match_chars) == reference(a, b)


@settings(max_examples=300)
@given(TEXT, TEXT, TEXT)
def test_shared_prefix_is_found(common: str, x: str, y: str) -> None:
    a, b = common + x, common + y
    got = classify(a, b)
    assert got.prefix_match_chars is not None and got.prefix_match_chars >= len(common)
    if got.divergence_byte is not None:
        assert got.divergence_byte >= len(common.encode())
        assert a.encode()[: got.divergence_byte] == b.encode()[: got.divergence_byte]


def test_multiline_replies_are_compared_whole() -> None:
    # the earlier tool compared only the first line: these two differ on line 3
    a = "def f(x):\n    y = x + 1\n    return y\n"
    b = "def f(x):\n    y = x + 1\n    return y * 2\n"
    got = classify(a, b)
    assert got.bucket == "no-match"
    assert got.divergence_byte == len("def f(x):\n    y = x + 1\n    return y")


def test_prefix_only_divergence_is_length_of_shorter() -> None:
    got = classify("The capital", "The capital of France")
    assert got == classify("The capital", "The capital of France")
    assert got.bucket == "prefix-only"
    assert got.divergence_byte == len("The capital")
    assert got.prefix_match_chars == len("The capital")


def test_multibyte_divergence_byte_vs_chars() -> None:
    got = classify("日本語です", "日本人です")
    assert got.bucket == "no-match"
    assert got.divergence_byte == 6  # two 3-byte characters shared
    assert got.prefix_match_chars == 2


def test_same_first_byte_different_character() -> None:
    # é (c3 a9) vs ê (c3 aa): first differing byte is inside the character
    got = classify("é", "ê")
    assert (got.bucket, got.divergence_byte, got.prefix_match_chars) == ("no-match", 1, 0)


def test_empty_replies() -> None:
    assert classify("", "").bucket == "exact"
    got = classify("", "x")
    assert (got.bucket, got.divergence_byte, got.prefix_match_chars) == ("prefix-only", 0, 0)


def test_unreachable_sides() -> None:
    assert classify(None, "x").bucket == "v1-unreachable"
    assert classify("x", None).bucket == "v2-unreachable"
    both = classify(None, None)
    assert (both.bucket, both.divergence_byte, both.prefix_match_chars) == (
        "both-unreachable", None, None)


@given(st.binary(max_size=50), st.binary(max_size=50))
def test_common_prefix_len(a: bytes, b: bytes) -> None:
    n = common_prefix_len(a, b)
    assert a[:n] == b[:n]
    assert n == min(len(a), len(b)) or a[n] != b[n]
