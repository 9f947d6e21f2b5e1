"""Classify a pair of replies into a bucket, with the first divergence.

Definitions (exact, byte-level on UTF-8):

- ``exact``: the two replies are byte-identical.
- ``prefix-only``: not exact, and one reply is a prefix of the other.
- ``no-match``: the first differing byte comes before the end of the shorter reply.
- ``v1-unreachable`` / ``v2-unreachable`` / ``both-unreachable``: a side gave no reply.

``divergence_byte`` is the offset of the first differing byte (running off the end of
the shorter reply counts as differing at its length); ``prefix_match_chars`` is how many
leading code points the two replies share.
"""

from __future__ import annotations

import msgspec


class Comparison(msgspec.Struct, frozen=True):
    bucket: str
    divergence_byte: int | None
    prefix_match_chars: int | None


def common_prefix_len(a: str | bytes, b: str | bytes) -> int:
    """Length of the longest common prefix of two sequences of the same type."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # invariant: a[:lo] == b[:lo], a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def classify(v1_text: str | None, v2_text: str | None) -> Comparison:
    """Compare two reply texts; ``None`` means that side did not reply."""
    if v1_text is None or v2_text is None:
        if v1_text is None and v2_text is None:
            return Comparison("both-unreachable", None, None)
        side = "v1" if v1_text is None else "v2"
        return Comparison(f"{side}-unreachable", None, None)
    if v1_text == v2_text:
        return Comparison("exact", None, len(v1_text))
    a, b = v1_text.encode("utf-8", "surrogatepass"), v2_text.encode("utf-8", "surrogatepass")
    byte = common_prefix_len(a, b)
    chars = common_prefix_len(v1_text, v2_text)
    bucket = "prefix-only" if byte == min(len(a), len(b)) else "no-match"
    return Comparison(bucket, byte, chars)
