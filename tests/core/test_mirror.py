"""The mirror's pure rules: comparability, greedy copies, capture lines, replay times."""

from __future__ import annotations

import hashlib

import pytest

from shadow_burnin.core.mirror import (
    capture_line,
    divergence_context,
    greedy_copy,
    not_comparable_reason,
    replay_offsets,
    text_summary,
)
from shadow_burnin.core.prompt import Prompt, parse_prompt, prompts_digest


@pytest.mark.parametrize(("body", "api", "reason"), [
    ({"temperature": 0}, "chat", None),
    ({"temperature": 0.0, "seed": 1, "stop": ["x"]}, "completions", None),
    ({"temperature": 0.7, "top_k": 1}, "native", None),
    ({}, "chat", "temperature>0"),  # the API's default temperature samples
    ({"temperature": 0.2}, "completions", "temperature>0"),
    ({"temperature": 0.2, "seed": 5}, "completions", "temperature>0"),  # seed not trusted
    ({"temperature": "0"}, "chat", "temperature>0"),  # not a number: not greedy
    ({"temperature": 0, "n": 2}, "chat", "n>1"),
    ({"temperature": 0, "best_of": 3}, "completions", "n>1"),
    ({"temperature": 0, "n": 1}, "chat", None),
    ({"temperature": 0, "tools": [{"type": "function"}]}, "chat", "tools"),
    ({"temperature": 0, "tools": []}, "chat", None),
    ({"temperature": 0, "prompt": ["a", "b"]}, "completions", "batch-prompt"),
    ({"temperature": 0, "prompt": ["a"]}, "completions", None),
])
def test_comparability(body: dict, api: str, reason: str | None) -> None:
    assert not_comparable_reason(body, api) == reason


def test_a_trusted_seed_makes_sampling_comparable() -> None:
    assert not_comparable_reason({"temperature": 0.7, "seed": 3}, "chat", trust_seed=True) \
        is None
    assert not_comparable_reason({"temperature": 0.7}, "chat", trust_seed=True) \
        == "temperature>0"


def test_greedy_copy_changes_only_sampling() -> None:
    body = {"messages": [], "temperature": 0.9, "n": 3, "best_of": 4, "stop": ["\n"]}
    assert greedy_copy(body) == {"messages": [], "temperature": 0, "stop": ["\n"]}
    assert body["n"] == 3  # the client's body is left alone


def test_context_and_summary() -> None:
    a = "x" * 100 + "A" + "y" * 100
    b = "x" * 100 + "B" + "y" * 100
    ctx = divergence_context(a, b, 100)
    assert ctx == {"at": 60, "v1": "x" * 40 + "A" + "y" * 39, "v2": "x" * 40 + "B" + "y" * 39}
    assert text_summary("ü") == {"text_sha256": hashlib.sha256("ü".encode()).hexdigest(),
                                 "text_chars": 1}
    assert text_summary(None) == {"text_sha256": None, "text_chars": None}


def test_a_capture_line_is_a_prompt_with_its_params() -> None:
    body = {"model": "gpt", "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 7,
            "temperature": 0.5, "stop": ["."], "logit_bias": {"12": -100}}
    line = capture_line(body, "chat", "2026-11-29T07:00:00.000Z", "cap-1")
    assert line == {"id": "cap-1", "category": "mirror-chat",
                    "messages": [{"role": "user", "content": "hi"}], "max_tokens": 7,
                    "params": {"temperature": 0.5, "stop": ["."], "logit_bias": {"12": -100}},
                    "at": "2026-11-29T07:00:00.000Z"}
    prompt = parse_prompt(line)
    assert prompt.params == line["params"] and prompt.at == line["at"]
    # params are part of the prompts digest, so of the setup fingerprint
    other = parse_prompt(dict(line, params={"temperature": 0.5, "stop": [";"]}))
    assert prompts_digest([prompt]) != prompts_digest([other])


@pytest.mark.parametrize("body", [
    {"messages": [{"role": "tool", "content": "x"}]},
    {"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]},
    {"prompt": [1, 2, 3]},
])
def test_requests_a_prompts_file_cannot_hold_are_not_captured(body: dict) -> None:
    api = "chat" if "messages" in body else "completions"
    assert capture_line(body, api, "2026-11-29T07:00:00Z", "c") is None


def test_prompt_params_are_checked() -> None:
    with pytest.raises(ValueError, match=r"params\.model"):
        parse_prompt({"id": "a", "category": "c", "prompt": "x", "params": {"model": "m"}})
    with pytest.raises(ValueError, match="params: must be an object"):
        parse_prompt({"id": "a", "category": "c", "prompt": "x", "params": [1]})
    with pytest.raises(ValueError, match="at: needs a time zone"):
        parse_prompt({"id": "a", "category": "c", "prompt": "x", "at": "2026-11-29T07:00:00"})


def _p(i: int, at: str | None) -> Prompt:
    return Prompt(f"p{i}", "c", prompt="x", at=at)


def test_replay_offsets() -> None:
    stamps = ["2026-11-29T07:00:00.000Z", "2026-11-29T07:00:01.000Z",
              "2026-11-29T07:00:00.500Z", "2026-11-29T07:00:04.000Z"]
    prompts = [_p(i, t) for i, t in enumerate(stamps)]
    assert replay_offsets(prompts, 1.0, 9.0) == (0.0, 1.0, 1.0, 4.0)  # never backwards
    assert replay_offsets(prompts, 2.0, 9.0) == (0.0, 0.5, 0.5, 2.0)
    assert replay_offsets([_p(0, stamps[0]), _p(1, None)], 1.0, 2.5) == (0.0, 2.5)
    assert replay_offsets([], 1.0, 1.0) == ()
