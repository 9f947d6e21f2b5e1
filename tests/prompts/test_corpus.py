"""Tests for the built-in corpus and the JSONL prompt loader."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

import pytest

from shadow_burnin import inputs
from shadow_burnin.core.prompt import Prompt, completion_text, parse_prompt, prompt_to_dict
from shadow_burnin.errors import InputError, PromptFileError
from shadow_burnin.prompts import builtin_files, categories, load_builtin, load_file

# fmt: off
REQUIRED = [
    "factual", "completion", "arithmetic", "word-problems", "logic-puzzles",
    "code-python", "code-c", "code-bash", "code-sql", "code-explain", "code-debug",
    "json-output", "lists", "poems", "stories", "summarisation",
    "long-context-reading", "long-context-summary", "translation", "unicode",
    "system-prompt", "multi-turn", "markdown-tables", "classification", "extraction",
    "edge-inputs", "repetition", "max-tokens", "chat-template",
]
COMPLETION_FRIENDLY = [
    "factual", "completion", "arithmetic", "lists",
    "code-python", "code-c", "code-bash", "code-sql", "code-javascript",
]
# fmt: on


@pytest.fixture(scope="module")
def corpus() -> list[Prompt]:
    return load_builtin()


def _by_cat(corpus: list[Prompt], category: str) -> list[Prompt]:
    return [p for p in corpus if p.category == category]


def _texts(prompts: list[Prompt]) -> list[str]:
    """Every string a prompt carries (plain text or each message's content)."""
    out: list[str] = []
    for p in prompts:
        if p.messages is None:
            out.append(p.prompt or "")
        else:
            out.extend(m.content for m in p.messages)
    return out


# --- the built-in corpus -----------------------------------------------------------------


def test_size_and_counts(corpus: list[Prompt]) -> None:
    counts = categories(corpus)
    assert len(counts) >= 30
    assert all(n >= 5 for n in counts.values()), counts
    assert sum(counts.values()) == len(corpus)


def test_required_categories_exist(corpus: list[Prompt]) -> None:
    missing = set(REQUIRED) - set(categories(corpus))
    assert not missing


def test_ids_unique_and_well_formed(corpus: list[Prompt]) -> None:
    ids = [p.id for p in corpus]
    assert len(ids) == len(set(ids))
    for cat in categories(corpus):
        got = [p.id for p in _by_cat(corpus, cat)]
        assert got == [f"{cat}-{i:02d}" for i in range(1, len(got) + 1)]


def test_sorted_by_category_then_file_order(corpus: list[Prompt]) -> None:
    cats = [p.category for p in corpus]
    assert cats == sorted(cats)
    assert load_builtin() == corpus  # deterministic


def test_one_file_per_category_and_size_limit() -> None:
    names = builtin_files()
    root = resources.files("shadow_burnin.prompts")
    total = 0
    for name in names:
        data = root.joinpath(name).read_bytes()
        total += len(data)
        stem = name.removesuffix(".jsonl")
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", stem)
        assert {p.category for p in load_file(Path(str(root.joinpath(name))))} == {stem}
    assert total < 1_500_000


def test_long_context_minimums(corpus: list[Prompt]) -> None:
    reading = _by_cat(corpus, "long-context-reading")
    summary = _by_cat(corpus, "long-context-summary")
    assert len(reading) >= 5 and len(summary) >= 5
    for p in reading:
        text = completion_text(p)
        assert len(text) >= 6500, p.id
        assert "Question:" in text[-400:], p.id
    for p in summary:
        assert len(completion_text(p)) >= 8500, p.id
        assert "ummar" in completion_text(p)[-600:] or "TL;DR" in completion_text(p), p.id


def test_long_documents_are_not_repetitive(corpus: list[Prompt]) -> None:
    for p in _by_cat(corpus, "long-context-reading") + _by_cat(corpus, "long-context-summary"):
        sentences = [s.strip() for s in re.split(r"[.!?]\s", completion_text(p)) if s.strip()]
        assert len(set(sentences)) >= 0.95 * len(sentences), p.id
        assert len(sentences) >= 60, p.id


def test_unicode_edge_cases_present(corpus: list[Prompt]) -> None:
    joined = "\n".join(_texts(_by_cat(corpus, "unicode")))
    assert "e\u0301" in joined  # combining acute accent
    assert "i\u0308" in joined  # combining diaeresis
    assert "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466" in joined  # ZWJ family
    assert "\ufe0f" in joined  # emoji variation selector
    assert "\U0001f3fd" in joined  # skin-tone modifier
    assert "\U0001f1ef\U0001f1f5" in joined  # regional-indicator flag
    assert re.search(r"[\u3040-\u30ff]", joined)  # Japanese kana
    assert re.search(r"[\u4e00-\u9fff]", joined)  # CJK ideographs
    assert re.search(r"[\uac00-\ud7a3]", joined)  # Korean Hangul
    assert re.search(r"[\U0001D400-\U0001D7FF]", joined)  # astral-plane letters


def test_chat_template_tokens_present(corpus: list[Prompt]) -> None:
    joined = "\n".join(_texts(_by_cat(corpus, "chat-template")))
    tokens = "<|im_end|> <|im_start|> </s> <start_of_turn> <end_of_turn> <|eot_id|> [INST]"
    for token in [*tokens.split(), "<<SYS>>", "<|endoftext|>", "<bos>", "assistant:"]:
        assert token in joined, token


def test_edge_inputs_present(corpus: list[Prompt]) -> None:
    plain = {p.prompt for p in _by_cat(corpus, "edge-inputs")}
    assert {"", " ", "\n", "?", "a"} <= plain


def test_max_tokens_boundaries(corpus: list[Prompt]) -> None:
    prompts = _by_cat(corpus, "max-tokens")
    limits = {p.max_tokens for p in prompts}
    assert {1, 2, 3} <= limits
    assert {None, 64} & limits
    assert all(p.max_tokens is None for p in corpus if p.category != "max-tokens")


def test_system_and_multi_turn_shapes(corpus: list[Prompt]) -> None:
    for p in _by_cat(corpus, "system-prompt"):
        assert p.messages is not None and p.messages[0].role == "system", p.id
    for p in _by_cat(corpus, "multi-turn"):
        assert p.messages is not None, p.id
        roles = [m.role for m in p.messages]
        assert roles.count("user") >= 1 and roles.count("assistant") >= 1, p.id
        assert len(roles) >= 2, p.id
    assert sum(len(p.messages or ()) >= 5 for p in _by_cat(corpus, "multi-turn")) >= 4


def test_completion_friendly_categories(corpus: list[Prompt]) -> None:
    for cat in COMPLETION_FRIENDLY:
        prompts = _by_cat(corpus, cat)
        plain = [p for p in prompts if p.messages is None]
        assert len(plain) >= 0.75 * len(prompts), cat
    assert any(p.messages is None for p in corpus) and any(p.messages for p in corpus)


def test_repetition_prompts(corpus: list[Prompt]) -> None:
    joined = "\n".join(_texts(_by_cat(corpus, "repetition")))
    assert "buffalo" in joined and "1, 2, 3" in joined


# --- load_file ----------------------------------------------------------------------------


def _write(path: Path, lines: list[str], newline: str = "\n") -> Path:
    path.write_bytes(newline.join(lines).encode("utf-8"))
    return path


def test_load_file_round_trip(tmp_path: Path, corpus: list[Prompt]) -> None:
    sample = corpus[::7] + _by_cat(corpus, "unicode") + _by_cat(corpus, "edge-inputs")
    sample = list({p.id: p for p in sample}.values())
    lines = [json.dumps(prompt_to_dict(p), ensure_ascii=False) for p in sample]
    lines.insert(1, "")
    lines.insert(3, "   \t")
    path = _write(tmp_path / "mine.jsonl", [*lines, ""])
    assert load_file(path) == sample
    assert load_file(str(path)) == sample


def test_load_file_crlf_bom_and_ascii_escapes(tmp_path: Path) -> None:
    objs = [
        {"id": "u1", "category": "c", "prompt": "e\u0301 \u2028 line"},
        {"id": "u2", "category": "c", "messages": [{"role": "user", "content": "hi"}]},
    ]
    lines = [json.dumps(o, ensure_ascii=True) for o in objs]
    path = tmp_path / "crlf.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n")
    assert load_file(path) == [parse_prompt(o) for o in objs]
    raw = tmp_path / "raw.jsonl"  # a raw U+2028 inside a JSON string is not a line break
    raw.write_text(json.dumps(objs[0], ensure_ascii=False) + "\n", encoding="utf-8")
    assert load_file(raw)[0].prompt == "e\u0301 \u2028 line"


GOOD = '{"id": "a", "category": "c", "prompt": "x"}'


@pytest.mark.parametrize(
    ("lines", "line", "needle"),
    [
        ([GOOD, "", '{"id": "b", "category": "c", "prompt": "y"'], 3, "invalid JSON"),
        ([GOOD, "not json at all"], 2, "invalid JSON"),
        (["", '{"id": "b", "category": "c", "prompt": "y", "max_tokens": 0}'], 2, "max_tokens:"),
        ([GOOD, '{"id": "b", "category": "c"}'], 2, "prompt:"),
        ([GOOD, '{"id": "b", "category": "c", "prompt": "y", "extra": 1}'], 2, "extra:"),
        ([GOOD, '{"id": "", "category": "c", "prompt": "y"}'], 2, "id:"),
        ([GOOD, "[1, 2]"], 2, "JSON object"),
        ([GOOD, '{"id": "b", "id": "c", "category": "c", "prompt": "y"}'], 2, "id: given twice"),
        (
            [GOOD, '{"id": "b", "category": "c", "messages": [{"role": "bot", "content": ""}]}'],
            2,
            "messages[0].role:",
        ),
        ([GOOD, "", '{"id": "z", "category": "c", "prompt": "y"}', GOOD], 4, "duplicate id"),
    ],
)
def test_load_file_errors_name_file_and_line(
    tmp_path: Path, lines: list[str], line: int, needle: str
) -> None:
    path = _write(tmp_path / "bad.jsonl", lines)
    with pytest.raises(PromptFileError) as info:
        load_file(path)
    err = info.value
    assert isinstance(err, InputError)
    assert err.line == line
    assert str(err).startswith(f"{path}:{line}: ")
    assert needle in str(err)
    assert "\n" not in str(err)


def test_duplicate_id_names_both_lines(tmp_path: Path) -> None:
    path = _write(tmp_path / "dup.jsonl", [GOOD, "", GOOD])
    with pytest.raises(PromptFileError, match=r"dup\.jsonl:3: .*line 1.*line 3"):
        load_file(path)


@pytest.mark.parametrize("content", [b"", b"\n\n  \n", b"\xef\xbb\xbf", b"\r\n\t\r\n"])
def test_empty_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(content)
    with pytest.raises(PromptFileError, match="no prompts") as info:
        load_file(path)
    assert str(info.value).startswith(f"{path}: ")


def test_not_utf8_gives_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(
        GOOD.encode()
        + b"\n\n"
        + '{"id": "b", "category": "c", "prompt": "caf\xe9"}'.encode("latin-1")
        + b"\n"
    )
    with pytest.raises(PromptFileError, match="not valid UTF-8") as info:
        load_file(path)
    assert info.value.line == 3
    assert str(info.value).startswith(f"{path}:3: ")


@pytest.mark.parametrize(
    ("name", "needle"), [("nope.jsonl", "file not found"), ("", "is a directory")]
)
def test_missing_file_or_directory(tmp_path: Path, name: str, needle: str) -> None:
    path = tmp_path / name if name else tmp_path
    with pytest.raises(PromptFileError, match=needle) as info:
        load_file(path)
    assert str(info.value).startswith(f"{path}: {needle}")
    assert info.value.line is None


def test_categories_counts_in_first_seen_order() -> None:
    ps = [Prompt("1", "b", "x"), Prompt("2", "a", "x"), Prompt("3", "b", "x")]
    assert list(categories(ps).items()) == [("b", 2), ("a", 1)]
    assert categories([]) == {}


@pytest.mark.parametrize(
    ("exc", "needle"),
    [
        (PermissionError(13, "Permission denied"), "permission denied"),
        (OSError(5, "Input/output error"), "cannot open: Input/output error"),
    ],
)
def test_read_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exc: OSError, needle: str
) -> None:
    path = _write(tmp_path / "p.jsonl", [GOOD])

    def boom(*_args: object) -> int:
        raise exc

    monkeypatch.setattr(inputs.os, "open", boom)  # every input is opened in inputs.py
    with pytest.raises(PromptFileError, match=needle) as info:
        load_file(path)
    assert str(info.value) == f"{path}: {needle}"
