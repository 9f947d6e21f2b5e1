"""Which prompt goes in which round: a shuffled, category-balanced cycle.

Each cycle visits every prompt once. Within a cycle the categories take turns (in a
shuffled order), each category's prompts in a shuffled order, so any window of rounds
hits the categories evenly. The order depends only on ``seed`` and the cycle number,
so a restart at the same ``cursor`` continues exactly where it stopped.
"""

from __future__ import annotations

import random
from collections.abc import Sequence


def cycle_order(categories: Sequence[str], seed: int, cycle: int) -> list[int]:
    """Indices into the prompt list for one cycle, given each prompt's category."""
    rng = random.Random(f"{seed}:{cycle}")
    by_cat: dict[str, list[int]] = {}
    for index, cat in enumerate(categories):
        by_cat.setdefault(cat, []).append(index)
    names = sorted(by_cat)
    rng.shuffle(names)
    queues = []
    for name in names:
        members = list(by_cat[name])
        rng.shuffle(members)
        queues.append(members)
    order: list[int] = []
    depth = max((len(q) for q in queues), default=0)
    for i in range(depth):
        order.extend(q[i] for q in queues if i < len(q))
    return order


class Schedule:
    """Maps a cursor (prompts consumed so far) to a prompt index; caches one cycle."""

    def __init__(self, categories: Sequence[str], seed: int) -> None:
        if not categories:
            raise ValueError("no prompts to schedule")
        self.categories = list(categories)
        self.seed = seed
        self._cycle = -1
        self._order: list[int] = []

    def index(self, cursor: int) -> int:
        cycle, pos = divmod(cursor, len(self.categories))
        if cycle != self._cycle:
            self._order = cycle_order(self.categories, self.seed, cycle)
            self._cycle = cycle
        return self._order[pos]
