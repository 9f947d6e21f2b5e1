"""bench's forensics figures from the columns (pure).

- ``no_match``: of N no-match rounds, how many near-tie / regression / unexplained, and
  ``not-analysed`` (logged without forensics, e.g. before it existed);
- ``prefix_only``: causes length / stop / unexplained (+ not-analysed);
- ``refire``: of the re-fired rounds, reproducible / flaky-v1 / flaky-v2 / flaky-both /
  incomplete;
- ``divergence_token_histogram``: first differing token of no-match rounds, in bins
  0, 1, 2–3, 4–7, … (powers of two);
- ``top_prompts``: the prompts with the most non-exact rounds, with their verdicts.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from shadow_burnin.core.columns import NOMATCH, PREFIX, Columns
from shadow_burnin.core.outcomes import CAUSES, REFIRE_OUTCOMES
from shadow_burnin.core.verdict import VERDICTS

BIN_EDGES = (0, 1, 2, 4, 8, 16, 32, 64, 128)


def _labelled(codes: np.ndarray, names: tuple[str, ...]) -> dict[str, int]:
    counts = np.bincount(codes.astype(np.int64), minlength=len(names) + 1)
    out = {name: int(counts[i + 1]) for i, name in enumerate(names)}
    out["not-analysed"] = int(counts[0])
    return out


def histogram(tokens: np.ndarray) -> list[dict[str, Any]]:
    """Counts of token positions in power-of-two bins (last bin open-ended)."""
    out = []
    for i, lo in enumerate(BIN_EDGES):
        hi = BIN_EDGES[i + 1] if i + 1 < len(BIN_EDGES) else None
        mask = tokens >= lo if hi is None else (tokens >= lo) & (tokens < hi)
        label = f"{lo}+" if hi is None else str(lo) if hi - lo == 1 else f"{lo}–{hi - 1}"
        out.append({"range": label, "from": lo, "to": hi, "rounds": int(mask.sum())})
    return out


def forensics_summary(cols: Columns, top: int = 10) -> dict[str, Any]:
    """The forensics part of ``bench --json`` (``forensics`` key)."""
    n = len(cols)
    extra = cols.extra
    if not extra or n == 0:
        zeros = np.zeros(0, dtype=np.int8)
        extra = {"verdict": zeros, "cause": zeros, "refire": zeros,
                 "div_token": np.zeros(0, dtype=np.int32)}
        nomatch = prefix = np.zeros(0, dtype=bool)
    else:
        nomatch, prefix = cols.bucket == NOMATCH, cols.bucket == PREFIX
    refired = extra["refire"] > 0
    tokens = extra["div_token"][nomatch]
    tokens = tokens[tokens >= 0]
    return {
        "no_match": {"rounds": int(nomatch.sum()),
                     "verdicts": _labelled(extra["verdict"][nomatch], VERDICTS)},
        "prefix_only": {"rounds": int(prefix.sum()),
                        "causes": _labelled(extra["cause"][prefix], CAUSES)},
        "refire": {"rounds": int(refired.sum()),
                   "outcomes": {k: v for k, v in _labelled(extra["refire"][refired],
                                                           REFIRE_OUTCOMES).items()
                                if k != "not-analysed"}},
        "divergence_token_histogram": histogram(tokens),
        "divergence_token_median": float(np.median(tokens)) if tokens.size else None,
        "top_prompts": _top_prompts(cols, extra, nomatch | prefix, top),
    }


def _top_prompts(cols: Columns, extra: dict[str, np.ndarray], non_exact: np.ndarray,
                 top: int) -> list[dict[str, Any]]:
    if not non_exact.any():
        return []
    size = len(cols.prompts)
    prompt = cols.prompt[non_exact]

    def count(mask: np.ndarray) -> np.ndarray:
        return np.bincount(prompt[mask], minlength=size)

    verdict, refire = extra["verdict"][non_exact], extra["refire"][non_exact]
    div = count(np.ones(prompt.size, dtype=bool))
    by = {v: count(verdict == i + 1) for i, v in enumerate(VERDICTS)}
    flaky = count((refire >= 2) & (refire <= 4))
    order = sorted(np.nonzero(div)[0], key=lambda i: (-int(div[i]), cols.prompts[i]))[:top]
    cat_of = cols.category_of(order)
    return [{"prompt_id": cols.prompts[i], "category": cols.categories[cat_of[int(i)]],
             "divergent": int(div[i]), **{v: int(by[v][i]) for v in VERDICTS},
             "flaky": int(flaky[i])} for i in order]
