"""Outcomes of a non-exact round besides its token verdict (pure).

- ``prefix_cause``: why one reply is a strict prefix of the other — ``length`` (the
  shorter side hit max_tokens), ``stop`` (it stopped earlier) or ``unexplained``;
- ``refire_outcome``: after re-sending the prompt, ``reproducible`` (both sides repeat
  their own answers), ``flaky-v1`` / ``flaky-v2`` / ``flaky-both`` (a side changed its
  own answer: nondeterminism inside that server) or ``incomplete`` (re-fires failed);
- ``forensic_codes``: the small integer codes bench keeps per round.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from shadow_burnin.core.verdict import VERDICTS

CAUSES: tuple[str, ...] = ("length", "stop", "unexplained")
REFIRE_OUTCOMES: tuple[str, ...] = ("reproducible", "flaky-v1", "flaky-v2", "flaky-both",
                                    "incomplete")


# -- prefix-only and re-fire ---------------------------------------------------------------


class PrefixCause(msgspec.Struct, frozen=True):
    cause: str
    shorter: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"cause": self.cause, "shorter": self.shorter, "reason": self.reason}


def prefix_cause(text1: str, finish1: str | None, text2: str, finish2: str | None
                 ) -> PrefixCause:
    """Why one reply is a strict prefix of the other: the shorter side's finish_reason."""
    n1, n2 = len(text1.encode("utf-8", "surrogatepass")), len(text2.encode("utf-8",
                                                                          "surrogatepass"))
    shorter, finish, other = ("v1", finish1, finish2) if n1 < n2 else ("v2", finish2, finish1)
    longer = "v2" if shorter == "v1" else "v1"
    if finish == "length":
        return PrefixCause("length", shorter, f"{shorter} hit max_tokens (finish_reason "
                           f"length) sooner; {longer} finished with {other}")
    if finish:
        return PrefixCause("stop", shorter, f"{shorter} stopped earlier (finish_reason "
                           f"{finish}); {longer} finished with {other}")
    return PrefixCause("unexplained", shorter, f"{shorter} gave no finish_reason")


class Refire(msgspec.Struct, frozen=True):
    outcome: str
    n: int
    v1_same: int
    v2_same: int
    v1_failed: int = 0
    v2_failed: int = 0
    pair_exact: int = 0
    texts: dict[str, list[str]] = msgspec.field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"outcome": self.outcome, "n": self.n, "v1_same": self.v1_same,
                               "v2_same": self.v2_same, "pair_exact": self.pair_exact}
        if self.v1_failed or self.v2_failed:
            out.update(v1_failed=self.v1_failed, v2_failed=self.v2_failed)
        if self.texts:
            out["texts"] = self.texts
        return out


def refire_outcome(orig1: str, orig2: str, again1: Sequence[str | None],
                   again2: Sequence[str | None]) -> Refire:
    """Did each side repeat its own answer? ``None`` in ``again*``: that re-fire failed.
    A changed answer's text is kept (``texts``) so the flake can be inspected."""
    ok1 = [t for t in again1 if t is not None]
    ok2 = [t for t in again2 if t is not None]
    same1, same2 = sum(t == orig1 for t in ok1), sum(t == orig2 for t in ok2)
    flaky1, flaky2 = same1 < len(ok1), same2 < len(ok2)
    if flaky1 or flaky2:
        outcome = "flaky-both" if flaky1 and flaky2 else "flaky-v1" if flaky1 else "flaky-v2"
    elif not ok1 or not ok2:
        outcome = "incomplete"
    else:
        outcome = "reproducible"
    pair = sum(x is not None and x == y for x, y in zip(again1, again2, strict=False))
    texts: dict[str, list[str]] = {}
    for side, ok, orig in (("v1", ok1, orig1), ("v2", ok2, orig2)):
        changed = [t for t in ok if t != orig]
        if changed:
            texts[side] = changed
    return Refire(outcome, max(len(again1), len(again2)), same1, same2,
                  len(again1) - len(ok1), len(again2) - len(ok2), pair, texts)


# -- compact codes for bench's columns -----------------------------------------------------

VERDICT_CODE = {v: i + 1 for i, v in enumerate(VERDICTS)}  # 0: not analysed
CAUSE_CODE = {c: i + 1 for i, c in enumerate(CAUSES)}
REFIRE_CODE = {r: i + 1 for i, r in enumerate(REFIRE_OUTCOMES)}
NO_CODES = (0, 0, 0, -1)


def forensic_codes(fx: Any, refire: Any) -> tuple[int, int, int, int]:
    """(verdict, cause, refire outcome, divergence token or −1) of a round record."""
    verdict = cause = outcome = 0
    token = -1
    if isinstance(fx, dict):
        verdict = VERDICT_CODE.get(str(fx.get("verdict")), 0)
        cause = CAUSE_CODE.get(str(fx.get("cause")), 0)
        d = fx.get("divergence_token")
        token = d if isinstance(d, int) and not isinstance(d, bool) else -1
    if isinstance(refire, dict):
        outcome = REFIRE_CODE.get(str(refire.get("outcome")), 0)
    return verdict, cause, outcome, token
