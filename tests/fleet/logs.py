"""Round logs for the fleet, export and rotation tests: shaped like the runner's, each
round classified by ``core.compare.classify`` from its two texts (so every bucket,
divergence byte and prefix is one the runner could have written)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson

from shadow_burnin.core.compare import classify
from shadow_burnin.core.timefmt import iso_ms

WORDS = ("the", "capital", "of", "France", "is", "Paris", "café", "日本", "🙂", "x", "\n")


def side(text: str | None, latency: float, error: str | None = None) -> dict[str, Any]:
    return {"text": text, "latency_ms": latency, "ttft_ms": None if text is None else 12.5,
            "status": 200 if text is not None else None, "finish_reason": "stop",
            "completion_tokens": None if text is None else 7, "error": error}


def round_record(n: int, t: float, rng: random.Random, *, diverge: float = 0.1,
                 unreachable: float = 0.0, lat2: float = 0.0) -> dict[str, Any]:
    text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))
    other = text
    roll = rng.random()
    if roll < diverge:
        cut = rng.randint(0, len(text))
        other = text[:cut] + "DIFF" + text[cut:]
    s1 = side(text, round(rng.uniform(100, 300), 3))
    s2 = side(other, round(rng.uniform(100, 300) + lat2, 3))
    if rng.random() < unreachable:
        s2 = side(None, 1.5, "http-503: Service Unavailable")
        bucket, div, pm = "v2-unreachable", None, None
    else:
        cmp = classify(text, other)
        bucket, div, pm = cmp.bucket, cmp.divergence_byte, cmp.prefix_match_chars
    cat = f"c{n % 3}"
    rec: dict[str, Any] = {
        "schema": 1, "round": n, "ts": iso_ms(t), "prompt_id": f"{cat}-{n % 5}",
        "category": cat, "bucket": bucket, "divergence_byte": div,
        "prefix_match_chars": pm, "v1": s1, "v2": s2, "setup": "abc", "seed": 1,
        "cursor": n - 1}
    if bucket == "no-match":
        rec["forensics"] = {"divergence_token": 3, "swing": 0.04, "verdict": "near-tie"}
        rec["refire"] = {"outcome": "reproducible", "n": 1}
    return rec


def write_log(path: Path, rounds: int, *, seed: int = 1, first: int = 1,
              t0: float = 1_780_000_000.0, step: float = 2.0, **shape: Any) -> list[dict]:
    """Write ``rounds`` round lines to ``path`` (appending); returns the records."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    records = [round_record(n, t0 + n * step, rng, **shape)
               for n in range(first, first + rounds)]
    with open(path, "ab") as fh:
        for r in records:
            fh.write(orjson.dumps(r) + b"\n")
    return records
