"""``show`` and ``recent`` on mirror rounds logged without their texts (the default)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from tests.app.test_mirror import Start, post, rounds, session, wait_rounds
from tests.cli.conftest import invoke

SHARED = "lorem ipsum " * 10  # 120 characters both replies share
HOSTILE = "\x1b[2J[bold red]boom[/bold red]\u202e"


def _reply(body: dict[str, Any], tail: str) -> str:
    return {"same": "identical answer", "differ": SHARED + tail}.get(
        str(body.get("prompt")), "x")


async def _private_log(tmp_path: Path, scripted_server: Start, **options: Any
                       ) -> list[dict[str, Any]]:
    v1 = await scripted_server(reply=lambda b: _reply(b, "alpha " + HOSTILE + " rest of v1"))
    v2 = await scripted_server(reply=lambda b: _reply(b, "beta and the rest of v2"))
    async with session(tmp_path, v1.url, v2.url, **options) as (url, s):
        for prompt in ("differ", "same"):
            await post(url, "/v1/completions", {"prompt": prompt, "temperature": 0})
            await wait_rounds(s, 1 if prompt == "differ" else 2)
    return rounds(tmp_path)


async def test_show_a_private_round_says_what_was_kept(tmp_path: Path,
                                                       scripted_server: Start) -> None:
    differ, same = await _private_log(tmp_path, scripted_server)
    assert differ["bucket"] == "no-match" and differ["v1"]["text"] is None
    got = invoke("show", "--log", tmp_path / "m.jsonl", "1")
    assert got.exit_code == 0, got.output
    out = got.output
    assert "texts not kept" in out and "--keep-text" in out
    for side in ("v1", "v2"):
        assert differ[side]["text_sha256"] in out
        assert f"{differ[side]['text_chars']} characters" in out
    assert differ["prompt_sha256"] in out and "mirrored request /v1/completions" in out
    # the context, from character 80, marked where the replies part
    assert "…[80] " in out
    assert "lorem ipsum ⟦a⟧lpha ⟨U+001B⟩[2J[bold red]boom[/bold red]⟨U+202E⟩" in out
    assert "lorem ipsum ⟦b⟧eta and the rest of v2" in out
    assert "\x1b[2J" not in out and "\u202e" not in out
    assert SHARED not in out  # only ±40 characters were kept
    got = invoke("show", "--log", tmp_path / "m.jsonl", "2")
    assert got.exit_code == 0 and same["bucket"] == "exact"
    assert "same SHA-256: identical" in got.output and "--keep-text" in got.output


async def test_recent_notes_private_rounds_and_kept_texts_show_in_full(
        tmp_path: Path, scripted_server: Start) -> None:
    await _private_log(tmp_path, scripted_server)
    got = invoke("recent", "--log", tmp_path / "m.jsonl")
    assert got.exit_code == 0
    assert "2 rounds logged without texts" in " ".join(got.output.split())
    kept = tmp_path / "kept"
    kept.mkdir()
    [differ, _same] = await _private_log(kept, scripted_server, keep_text=True)
    assert differ["v1"]["text"] is not None
    got = invoke("show", "--log", kept / "m.jsonl", "1")
    assert got.exit_code == 0
    assert "texts not kept" not in got.output and "--keep-text" not in got.output
    assert SHARED.strip() in got.output
    assert "without texts" not in invoke("recent", "--log", kept / "m.jsonl").output


def test_show_survives_a_hostile_private_round(tmp_path: Path) -> None:
    """A log written by someone else: contexts of the wrong shape, markup, controls."""
    side = {"text": None, "latency_ms": "fast", "status": 200, "error": None,
            "text_sha256": "[red]x[/red]\x1b]0;owned\x07", "text_chars": "many"}
    base = {"schema": 1, "ts": "2026-11-29T09:00:00.000Z", "prompt_id": "m-1",
            "category": "mirror-chat", "bucket": "no-match", "divergence_byte": 3,
            "prefix_match_chars": 3, "v1": side, "v2": dict(side), "first": "both",
            "source": "mirror", "mirror": {"path": "/v1/x\x1b[1m", "reason": "[b]r[/b]"}}
    contexts: list[Any] = [None, "text", {"at": "0", "v1": "a", "v2": "b"},
                           {"at": -1, "v1": "a", "v2": "b"}, {"at": 0, "v1": 1, "v2": "b"},
                           {"at": 10, "v1": "abc", "v2": "abd"}]
    log = tmp_path / "h.jsonl"
    log.write_bytes(b"".join(orjson.dumps(dict(base, round=i + 1, context=c)) + b"\n"
                             for i, c in enumerate(contexts)))
    for i, _ in enumerate(contexts):
        got = invoke("show", "--log", log, str(i + 1))
        assert got.exit_code == 0, got.output
        assert "\x1b" not in got.output and "\x07" not in got.output
        assert "[red]x[/red]" in got.output and "[b]r[/b]" in got.output
    assert "…[10] abc" in invoke("show", "--log", log, "6").output
    assert "no divergence context" in invoke("show", "--log", log, "1").output
