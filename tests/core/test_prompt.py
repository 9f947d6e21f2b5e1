"""Tests for the pure Prompt helpers: parsing, endpoint shapes and the digest."""

from __future__ import annotations

from typing import Any

import pytest

from shadow_burnin.core.prompt import (
    Message,
    Prompt,
    chat_messages,
    completion_text,
    parse_prompt,
    prompt_to_dict,
    prompts_digest,
)


def _msgs(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": r, "content": c} for r, c in pairs]


BASE: dict[str, Any] = {"id": "x-01", "category": "cat"}

ACCEPTED: list[tuple[dict[str, Any], Prompt]] = [
    ({**BASE, "prompt": "Hello"}, Prompt("x-01", "cat", prompt="Hello")),
    ({**BASE, "prompt": ""}, Prompt("x-01", "cat", prompt="")),
    ({**BASE, "prompt": " \n"}, Prompt("x-01", "cat", prompt=" \n")),
    ({**BASE, "prompt": "Hi", "max_tokens": 1}, Prompt("x-01", "cat", "Hi", max_tokens=1)),
    (
        {**BASE, "messages": _msgs(("system", "Be brief."), ("user", "Hi"))},
        Prompt(
            "x-01",
            "cat",
            messages=(Message("system", "Be brief."), Message("user", "Hi")),
        ),
    ),
    (
        {**BASE, "messages": _msgs(("user", "")), "max_tokens": 64},
        Prompt("x-01", "cat", messages=(Message("user", ""),), max_tokens=64),
    ),
    ({"id": "é 1", "category": "日本語", "prompt": "e\u0301"}, Prompt("é 1", "日本語", "e\u0301")),
]


@pytest.mark.parametrize(("obj", "expected"), ACCEPTED)
def test_parse_prompt_accepts(obj: dict[str, Any], expected: Prompt) -> None:
    assert parse_prompt(obj) == expected


REJECTED: list[tuple[object, str]] = [
    (["not", "an", "object"], "prompt record:"),
    ("text", "prompt record:"),
    ({"category": "c", "prompt": "p"}, "id:"),
    ({"id": "", "category": "c", "prompt": "p"}, "id:"),
    ({"id": "   ", "category": "c", "prompt": "p"}, "id:"),
    ({"id": 3, "category": "c", "prompt": "p"}, "id:"),
    ({"id": "a\nb", "category": "c", "prompt": "p"}, "id:"),
    ({"id": "x", "prompt": "p"}, "category:"),
    ({"id": "x", "category": "", "prompt": "p"}, "category:"),
    ({"id": "x", "category": ["c"], "prompt": "p"}, "category:"),
    ({"id": "x", "category": None, "prompt": "p"}, "category:"),
    ({**BASE}, "prompt:"),
    ({**BASE, "prompt": "p", "messages": _msgs(("user", "p"))}, "prompt:"),
    ({**BASE, "prompt": None}, "prompt:"),
    ({**BASE, "prompt": 42}, "prompt:"),
    ({**BASE, "prompt": "bad \ud800 surrogate"}, "prompt:"),
    ({**BASE, "messages": "hello"}, "messages:"),
    ({**BASE, "messages": {"role": "user", "content": "x"}}, "messages:"),
    ({**BASE, "messages": []}, "messages:"),
    ({**BASE, "messages": ["hello"]}, "messages[0]:"),
    ({**BASE, "messages": [{"content": "x"}]}, "messages[0].role:"),
    ({**BASE, "messages": _msgs(("user", "a"), ("robot", "b"))}, "messages[1].role:"),
    ({**BASE, "messages": _msgs(("User", "a"))}, "messages[0].role:"),
    ({**BASE, "messages": [{"role": "user"}]}, "messages[0].content:"),
    ({**BASE, "messages": [{"role": "user", "content": None}]}, "messages[0].content:"),
    ({**BASE, "messages": [{"role": "user", "content": ["x"]}]}, "messages[0].content:"),
    (
        {**BASE, "messages": [{"role": "user", "content": "x", "name": "bob"}]},
        "messages[0].name:",
    ),
    ({**BASE, "prompt": "p", "max_tokens": 0}, "max_tokens:"),
    ({**BASE, "prompt": "p", "max_tokens": -5}, "max_tokens:"),
    ({**BASE, "prompt": "p", "max_tokens": 1.5}, "max_tokens:"),
    ({**BASE, "prompt": "p", "max_tokens": "10"}, "max_tokens:"),
    ({**BASE, "prompt": "p", "max_tokens": True}, "max_tokens:"),
    ({**BASE, "prompt": "p", "max_tokens": None}, "max_tokens:"),
    ({**BASE, "prompt": "p", "temperature": 0}, "temperature:"),
    ({**BASE, "prompt": "p", "Prompt": "q"}, "Prompt:"),
]


@pytest.mark.parametrize(("obj", "field"), REJECTED)
def test_parse_prompt_rejects_naming_the_field(obj: object, field: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_prompt(obj)
    message = str(info.value)
    assert message.startswith(field), message
    assert "\n" not in message


def test_prompt_requires_exactly_one_form() -> None:
    with pytest.raises(ValueError):
        Prompt("a", "b")
    with pytest.raises(ValueError):
        Prompt("a", "b", prompt="x", messages=(Message("user", "x"),))


def test_chat_messages_plain_and_chat() -> None:
    plain = Prompt("p", "c", prompt="What is 2 + 2?")
    assert chat_messages(plain) == [{"role": "user", "content": "What is 2 + 2?"}]
    assert chat_messages(Prompt("e", "c", prompt="")) == [{"role": "user", "content": ""}]
    turns = _msgs(("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello"), ("user", "?"))
    chat = parse_prompt({**BASE, "messages": turns})
    assert chat_messages(chat) == turns
    out = chat_messages(chat)
    out[0]["content"] = "changed"
    assert chat_messages(chat) == turns  # fresh dicts each call


def test_completion_text_plain_is_unchanged() -> None:
    for text in ["The capital of France is", "", " ", "\n", "e\u0301 <|im_end|>"]:
        assert completion_text(Prompt("p", "c", prompt=text)) == text


def test_completion_text_flattens_chat() -> None:
    p = parse_prompt(
        {
            **BASE,
            "messages": _msgs(
                ("system", "You are terse."),
                ("user", "Hi"),
                ("assistant", "Hello."),
                ("user", "Name a colour."),
            ),
        }
    )
    assert completion_text(p) == (
        "System: You are terse.\n\nUser: Hi\n\nAssistant: Hello.\n\n"
        "User: Name a colour.\n\nAssistant:"
    )


def test_completion_text_assistant_prefill_is_continued() -> None:
    p = parse_prompt({**BASE, "messages": _msgs(("user", "Haiku?"), ("assistant", "Steam"))})
    assert completion_text(p) == "User: Haiku?\n\nAssistant: Steam"


def test_completion_text_empty_content() -> None:
    p = parse_prompt({**BASE, "messages": _msgs(("user", ""))})
    assert completion_text(p) == "User:\n\nAssistant:"


def test_prompt_to_dict_round_trips() -> None:
    for obj, _ in ACCEPTED:
        assert parse_prompt(prompt_to_dict(parse_prompt(obj))) == parse_prompt(obj)
        assert prompt_to_dict(parse_prompt(obj)) == obj


SET = [
    Prompt("a-01", "a", prompt="one"),
    Prompt("a-02", "a", messages=(Message("user", "two"),), max_tokens=3),
    Prompt("b-01", "b", prompt=""),
]


def test_digest_is_stable_and_hex() -> None:
    rebuilt = [parse_prompt(prompt_to_dict(p)) for p in SET]
    d = prompts_digest(SET)
    assert d == prompts_digest(rebuilt)
    assert len(d) == 64 and set(d) <= set("0123456789abcdef")  # lower-case hex
    # A fixed value guards against accidental changes of the canonical form, which
    # would invalidate every saved setup fingerprint.
    assert d == "d8a7db5e9d18386a91df0137ce798053d92c8af32b05e4412d89f1fbc7507f95"
    assert prompts_digest([]) == prompts_digest(())


@pytest.mark.parametrize(
    "changed",
    [
        list(reversed(SET)),
        SET[:2],
        [*SET, Prompt("c-01", "c", prompt="")],
        [Prompt("a-01", "a", prompt="one "), *SET[1:]],
        [Prompt("a-0l", "a", prompt="one"), *SET[1:]],
        [Prompt("a-01", "x", prompt="one"), *SET[1:]],
        [SET[0], Prompt("a-02", "a", messages=(Message("user", "two"),)), SET[2]],
        [SET[0], Prompt("a-02", "a", messages=(Message("user", "two"),), max_tokens=4), SET[2]],
        [SET[0], Prompt("a-02", "a", messages=(Message("system", "two"),), max_tokens=3), SET[2]],
        [SET[0], Prompt("a-02", "a", prompt="two", max_tokens=3), SET[2]],
        [SET[0], SET[1], Prompt("b-01", "b", prompt=" ")],
    ],
)
def test_digest_is_sensitive(changed: list[Prompt]) -> None:
    assert prompts_digest(changed) != prompts_digest(SET)


def test_digest_distinguishes_boundaries() -> None:
    left = [Prompt("a", "c", prompt="x\ny"), Prompt("b", "c", prompt="z")]
    right = [Prompt("a", "c", prompt="x"), Prompt("b", "c", prompt="y\nz")]
    assert prompts_digest(left) != prompts_digest(right)
