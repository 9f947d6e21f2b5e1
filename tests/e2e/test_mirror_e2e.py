"""End to end: a burst of real requests through ``shadow-burnin mirror`` to the real pair.

The official ``openai`` client talks to the mirror; v1 answers it, v2 gets the shadow
copies. Every request must come back as v1's own answer and become one round, bucketed
as its two texts say (``--keep-text`` so the test can check them).
"""

from __future__ import annotations

import asyncio
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import openai
import orjson
import pytest

from shadow_burnin.core.compare import classify

pytestmark = pytest.mark.e2e
PROMPTS = ["The capital of France is", "Water boils at", "def fibonacci(n):",
           "Once upon a time", "The three primary colours are", "1, 2, 3, 4,"]


def _start_mirror(pair, log: Path) -> tuple[str, subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "shadow_burnin", "mirror", "--listen", "127.0.0.1:0",
         "--v1", pair.v1.url, "--v2", pair.v2.url, "--log", str(log), "--keep-text",
         "--timeout", "300", "--shadow-concurrency", "2", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=dict(os.environ, PYTHONUNBUFFERED="1"), start_new_session=True)
    assert proc.stderr is not None
    for _ in range(600):
        if select.select([proc.stderr], [], [], 0.1)[0]:
            line = proc.stderr.readline().decode()
            if line.startswith("mirror listening on "):
                return line.split()[3], proc
            if not line:
                break
    proc.kill()
    raise AssertionError(f"mirror did not start: {proc.communicate()}")


def test_a_burst_through_the_mirror_is_served_and_logged(real_pair, tmp_path: Path) -> None:
    log = tmp_path / "mirror.jsonl"
    url, proc = _start_mirror(real_pair, log)
    try:
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="none", max_retries=0,
                                    timeout=600)

        async def one(i: int, prompt: str) -> str:
            stream = i % 2 == 1
            got = await client.completions.create(
                model="gemma", prompt=prompt, max_tokens=12, temperature=0, stream=stream)
            if not stream:
                return got.choices[0].text  # type: ignore[union-attr]
            return "".join([c.choices[0].text async for c in got  # type: ignore[union-attr]
                            if c.choices])

        async def burst() -> list[str]:
            texts = await asyncio.gather(*(one(i, p) for i, p in enumerate(PROMPTS)))
            await client.completions.create(model="gemma", prompt=PROMPTS[0], max_tokens=8,
                                            temperature=0.8)
            return list(texts)

        texts = asyncio.run(burst())
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err
    rounds = [orjson.loads(line) for line in log.read_bytes().splitlines()]
    assert len(rounds) == len(PROMPTS) + 1
    assert [r["round"] for r in rounds] == list(range(1, len(rounds) + 1))
    greedy = [r for r in rounds if "reason" not in r["mirror"]]
    assert len(greedy) == len(PROMPTS)
    by_prompt = {r["request"]["prompt"]: r for r in greedy}
    for prompt, text in zip(PROMPTS, texts, strict=True):
        r = by_prompt[prompt]
        assert r["v1"]["text"] == text  # the client got v1's reply
        assert r["bucket"] == classify(r["v1"]["text"], r["v2"]["text"]).bucket
    [sampled] = [r for r in rounds if "reason" in r["mirror"]]
    assert sampled["bucket"] == "not-comparable"
    assert sampled["mirror"]["reason"] == "temperature>0"
