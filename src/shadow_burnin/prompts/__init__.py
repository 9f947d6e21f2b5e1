"""The built-in prompt corpus and the JSONL prompt loader.

A prompts file is UTF-8 JSONL: one JSON object per line, as accepted by
:func:`shadow_burnin.core.prompt.parse_prompt`, for example::

    {"id": "greet-01", "category": "greetings", "prompt": "Q: How do you say hello in Welsh?\\nA:"}
    {"id": "greet-02", "category": "greetings", "messages": [{"role": "user", "content": "Hi"}]}

Blank lines are skipped; a leading UTF-8 byte-order mark is tolerated. Ids must be
unique within the file. Every problem raises :class:`~shadow_burnin.errors.PromptFileError`
whose one-line message names the file, the line and the problem.

The built-in corpus is one file per category in this package (``<category>.jsonl``),
with ids ``<category>-NN``. :func:`load_builtin` reads them all.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

from shadow_burnin.core.prompt import Prompt, parse_prompt
from shadow_burnin.errors import PromptFileError
from shadow_burnin.inputs import PROMPTS_MAX_BYTES, read_input

__all__ = ["builtin_files", "categories", "load_builtin", "load_file", "parse_jsonl"]

_BOM = "\ufeff"


class _DuplicateKey(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(f"{key}: given twice in the same object")
        out[key] = value
    return out


def _decode(path: str, data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        bad = data[exc.start : exc.start + 1].hex()
        raise PromptFileError(
            path, f"not valid UTF-8 (byte 0x{bad} at offset {exc.start})", line=line
        ) from None
    return text.removeprefix(_BOM)


def parse_jsonl(path: str, text: str) -> list[Prompt]:
    """Parse the decoded text of a prompts file; ``path`` is only used in messages.

    Lines are split on ``\\n`` only (JSON strings may hold a raw U+2028 and the like),
    and a trailing ``\\r`` is dropped, so CRLF files work.
    """
    prompts: list[Prompt] = []
    first_line: dict[str, int] = {}
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.removesuffix("\r")
        if not line.strip(" \t\r"):
            continue
        try:
            obj = json.loads(line, object_pairs_hook=_no_duplicate_keys)
        except _DuplicateKey as exc:
            raise PromptFileError(path, str(exc), line=number) from None
        except json.JSONDecodeError as exc:
            raise PromptFileError(
                path, f"invalid JSON: {exc.msg} (column {exc.colno})", line=number
            ) from None
        try:
            prompt = parse_prompt(obj)
        except ValueError as exc:
            raise PromptFileError(path, str(exc), line=number) from None
        if prompt.id in first_line:
            raise PromptFileError(
                path,
                f"id: duplicate id {json.dumps(prompt.id, ensure_ascii=False)}"
                f" (first used on line {first_line[prompt.id]}, again on line {number})",
                line=number,
            )
        first_line[prompt.id] = number
        prompts.append(prompt)
    if not prompts:
        raise PromptFileError(path, "no prompts (the file is empty or has only blank lines)")
    return prompts


def load_file(path: str | Path) -> list[Prompt]:
    """Load a user prompts file, in file order. Raises PromptFileError on any problem."""
    name = str(path)
    p = Path(path)
    if not p.exists() and not p.is_symlink():
        raise PromptFileError(name, "file not found")
    # one check for every input: regular file only (no FIFO, device, directory), capped
    data = read_input(p, PromptFileError, "prompts", max_bytes=PROMPTS_MAX_BYTES)
    return parse_jsonl(name, _decode(name, data))


def builtin_files() -> list[str]:
    """Names of the built-in category files, sorted."""
    root = resources.files(__name__)
    return sorted(
        entry.name for entry in root.iterdir() if entry.name.endswith(".jsonl") and entry.is_file()
    )


def load_builtin() -> list[Prompt]:
    """All built-in prompts, sorted by category, then by order within the file.

    Ids are checked to be unique across the whole corpus.
    """
    root = resources.files(__name__)
    prompts: list[Prompt] = []
    for name in builtin_files():
        label = f"<builtin>/{name}"
        prompts.extend(parse_jsonl(label, _decode(label, root.joinpath(name).read_bytes())))
    prompts.sort(key=lambda p: p.category)  # stable: keeps file order within a category
    seen: set[str] = set()
    for p in prompts:
        if p.id in seen:
            raise PromptFileError("<builtin>", f"id: duplicate id {p.id!r} across files")
        seen.add(p.id)
    return prompts


def categories(prompts: Iterable[Prompt]) -> dict[str, int]:
    """Category -> number of prompts, in order of first appearance."""
    counts: dict[str, int] = {}
    for p in prompts:
        counts[p.category] = counts.get(p.category, 0) + 1
    return counts
