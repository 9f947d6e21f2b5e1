"""A round's record from its two replies (pure): the comparison and the bookkeeping."""

from __future__ import annotations

from shadow_burnin.core.compare import classify
from shadow_burnin.core.prompt import Prompt
from shadow_burnin.core.records import Round, SideReply


def build_round(number: int, ts: str, prompt: Prompt, r1: SideReply, r2: SideReply, *,
                first: str | None, setup: str | None, seed: int | None,
                cursor: int | None) -> Round:
    """Round ``number`` of ``prompt``: bucket, divergence byte and prefix from the texts
    of the sides that replied."""
    cmp = classify(r1.text if r1.replied else None, r2.text if r2.replied else None)
    return Round(
        round=number, ts=ts, prompt_id=prompt.id, category=prompt.category,
        bucket=cmp.bucket, divergence_byte=cmp.divergence_byte,
        prefix_match_chars=cmp.prefix_match_chars, v1=r1, v2=r2, first=first,
        setup=setup, seed=seed, cursor=cursor,
    )
