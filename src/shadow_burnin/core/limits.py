"""The bounds of every numeric setting, defined once.

Flags (click ranges), the TOML config and prompt files all check against these, so a
value such as ``99999999999999999999`` is refused up front with one line naming the
setting, never met mid-round as an ``OverflowError`` or ``TypeError``.
"""

from __future__ import annotations

from typing import Final

#: (lowest, highest) accepted, both inclusive.
MAX_TOKENS: Final = (1, 1_000_000)
ROUNDS: Final = (1, 10**12)
COUNT: Final = (1, 10**9)  # `recent -n`, `divergences --limit`
ROUND_NUMBER: Final = (1, 2**63 - 1)  # `show ROUND`
CONCURRENCY: Final = (1, 1024)
SEED: Final = (0, 2**63 - 1)
LOGPROBS: Final = (0, 20)
REFIRE: Final = (0, 10)
AA_EVERY: Final = (0, 10**9)
BOOTSTRAP: Final = (1, 10**7)
MAX_REPLY_BYTES: Final = (1, 2**31)
PPL_WINDOW: Final = (2, 1_000_000)
PPL_TOP_K: Final = (1, 100)
PPL_MAX_WINDOWS: Final = (1, 10**9)
HALT_MIN_ROUNDS: Final = (1, 10**9)
HALT_WORST: Final = (1, 1000)
ALERT_SPIKE_WINDOW: Final = (1, 100_000)
#: seconds; (exclusive lower bound 0 for timeouts, inclusive 0 for the interval)
TIMEOUT_S: Final = (0.0, 7 * 86400.0)
INTERVAL_S: Final = (0.0, 86400.0)
DURATION_S: Final = (0.0, 10 * 365 * 86400.0)


def in_range(value: float, bounds: tuple[float, float]) -> bool:
    lo, hi = bounds
    return lo <= value <= hi
