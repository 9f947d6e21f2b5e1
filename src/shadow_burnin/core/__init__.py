"""Pure core: comparison, records, statistics, gates, verdicts.

Nothing here does I/O, reads the clock or draws randomness implicitly; everything is a
function of its arguments. Nothing here imports from ``edge``, ``render`` or ``cli``.
"""
