"""A ``tokenizer.json`` for mistral.rs built from a GGUF's own tokenizer metadata.

mistral.rs reads this model's GGUF tokenizer (``tokenizer.ggml.model = "llama"``, i.e.
SentencePiece BPE as llama.cpp implements it) as a Unigram model and tokenizes wrongly
(no BOS, other pieces, garbage output). llama.cpp's SPM tokenizer merges, at each step,
the adjacent pair whose merged piece has the highest score, falls back to ``<0xNN>`` byte
tokens for characters outside the vocabulary, writes spaces as ``▁`` and, with
``add_space_prefix`` false, adds no leading space. The same rules in Hugging Face
``tokenizers`` terms:

- model: BPE over the GGUF vocabulary, ``byte_fallback``, merges = every split of a
  normal piece into two vocabulary pieces, ordered by the merged piece's score (the
  ordering SentencePiece's own converters use);
- normaliser: ``" "`` → ``"▁"`` (plus a ``▁`` prefix only if the GGUF asks for it);
- control pieces (``<bos>``, ``<start_of_turn>`` …) are special added tokens and
  user-defined pieces are added tokens, matched whole before the model runs, as
  llama.cpp's special-token partition does;
- post-processor: BOS in front when the GGUF says ``add_bos_token``;
- decoder: ``▁`` → space, byte fallback, fuse.

The GGUF is read with the maintained ``gguf`` package and the result serialised with
``tokenizers``; it is cached next to the model (≈ 16 MB, a few seconds to build once).
Whether it agrees with llama.cpp is a test (``tests/io/servers/test_mistral_front.py``
compares every demo prompt with xllamacpp's ``/tokenize``).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from shadow_burnin.errors import ServerStartError

SPACE = "▁"
# GGUF token types (llama.cpp's llama_token_type)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
FORMAT = "1"  # bump when the construction below changes (invalidates the cache)


def _field(reader: Any, key: str, default: Any = None) -> Any:
    field = reader.fields.get(key)
    if field is None:
        return default
    return field.contents()


def _merges(pieces: list[str], scores: list[float], types: list[int]) -> list[tuple[str, str]]:
    """Every way to build a normal piece from two vocabulary pieces, best score first."""
    index = {p: i for i, p in enumerate(pieces) if types[i] in (NORMAL, UNKNOWN)}
    found: list[tuple[float, int, int, str, str]] = []
    for piece, pid in index.items():
        if len(piece) < 2:
            continue
        for cut in range(1, len(piece)):
            left, right = piece[:cut], piece[cut:]
            li, ri = index.get(left), index.get(right)
            if li is not None and ri is not None:
                found.append((-scores[pid], li, ri, left, right))
    found.sort(key=lambda m: (m[0], m[1], m[2]))
    return [(m[3], m[4]) for m in found]


def build_tokenizer_json(gguf_path: Path, space_prefix: bool | None = None,
                         with_bos: bool | None = None) -> str:
    """The tokenizer of ``gguf_path`` serialised as a ``tokenizer.json`` string.

    ``space_prefix`` and ``with_bos`` override the GGUF's ``add_space_prefix`` and
    ``add_bos_token`` (None: the GGUF's own) — deliberately wrong tokenizers for the
    labelled benchmark (SentencePiece's default "dummy prefix" applied to a model trained
    without it; a BOS token never added).
    """
    try:
        from gguf import GGUFReader
        from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, processors
    except ImportError as exc:
        raise ServerStartError(
            f"building the mistral.rs tokenizer needs {exc.name!r}; "
            "install the demo extra: pip install 'shadow-burnin[demo]'"
        ) from exc
    try:
        reader = GGUFReader(str(gguf_path))
    except (OSError, ValueError) as exc:
        raise ServerStartError(f"{gguf_path}: cannot read it as GGUF: {exc}") from exc
    kind = _field(reader, "tokenizer.ggml.model")
    if kind != "llama":
        raise ServerStartError(
            f"{gguf_path}: tokenizer.ggml.model is {kind!r}; only SentencePiece ('llama') "
            "vocabularies can be converted"
        )
    pieces: list[str] = list(_field(reader, "tokenizer.ggml.tokens"))
    scores = [float(s) for s in _field(reader, "tokenizer.ggml.scores")]
    types = [int(t) for t in _field(reader, "tokenizer.ggml.token_type")]
    bos = int(_field(reader, "tokenizer.ggml.bos_token_id", 1))
    unk = int(_field(reader, "tokenizer.ggml.unknown_token_id", 0))
    add_bos = bool(_field(reader, "tokenizer.ggml.add_bos_token", True))
    add_prefix = bool(_field(reader, "tokenizer.ggml.add_space_prefix", True))
    if space_prefix is not None:
        add_prefix = space_prefix
    if with_bos is not None:
        add_bos = with_bos

    vocab = {p: i for i, p in enumerate(pieces)}
    model = models.BPE(vocab=vocab, merges=_merges(pieces, scores, types),
                       unk_token=pieces[unk], byte_fallback=True, fuse_unk=True)
    tok = Tokenizer(model)
    norm: list[Any] = [normalizers.Replace(" ", SPACE)]
    if add_prefix:
        norm.insert(0, normalizers.Prepend(SPACE))
    tok.normalizer = normalizers.Sequence(norm)
    tok.decoder = decoders.Sequence([decoders.Replace(SPACE, " "), decoders.ByteFallback(),
                                     decoders.Fuse()])
    added = [AddedToken(pieces[i], special=types[i] == CONTROL, normalized=False)
             for i in range(len(pieces)) if types[i] in (CONTROL, USER_DEFINED)]
    tok.add_tokens(added)
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{pieces[bos]} $A", pair=f"{pieces[bos]} $A $B",
            special_tokens=[(pieces[bos], bos)])
    return str(tok.to_str())


def _fingerprint(gguf_path: Path) -> str:
    stat = gguf_path.stat()
    key = f"{FORMAT}:{gguf_path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def ensure_tokenizer_json(gguf_path: Path, cache: Path | None = None,
                          space_prefix: bool | None = None, bos: bool | None = None) -> Path:
    """The cached ``tokenizer.json`` for ``gguf_path`` (built once, written atomically);
    ``space_prefix``/``bos`` as in :func:`build_tokenizer_json` (a variant: its own file)."""
    from shadow_burnin.io.servers.llama_build import cache_dir

    folder = cache or cache_dir() / "tokenizers"
    folder.mkdir(parents=True, exist_ok=True)
    variant = "".join(f"-{name}{int(flag)}" for name, flag in
                      (("prefix", space_prefix), ("bos", bos)) if flag is not None)
    target = folder / f"{gguf_path.stem}-{_fingerprint(gguf_path)}{variant}.tokenizer.json"
    if target.is_file():
        return target
    text = build_tokenizer_json(gguf_path, space_prefix, bos)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target
