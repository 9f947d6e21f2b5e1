"""The deliberately broken server variants of the labelled benchmark: each setting reaches
what the server is told (their effect on real replies is measured by
benchmarks/verdicts/run.py and its e2e test)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shadow_burnin.io.servers.llama_build import CTX_SIZE, ensure_model
from shadow_burnin.io.servers.mistral_front import (
    RAW_TEMPLATE,
    RAW_TEMPLATE_NO_BOS,
    MistralSettings,
    raw_template_path,
)
from shadow_burnin.io.servers.xllama import XllamaSettings, common_params


def test_xllama_context_settings_reach_common_params() -> None:
    config = json.loads(XllamaSettings(n_ctx=256, ctx_shift=True, swa_full=True)
                        .to_json(ensure_model(), 1234))
    params = common_params(config)
    assert (params.n_ctx, params.ctx_shift, params.swa_full) == (256, True, True)
    default = common_params(json.loads(XllamaSettings().to_json(ensure_model(), 1234)))
    assert (default.n_ctx, default.ctx_shift, default.swa_full) == (CTX_SIZE, False, False)


def test_xllama_label_names_the_broken_settings() -> None:
    label = XllamaSettings(n_ctx=256, ctx_shift=True, repeat_penalty=1.1,
                           rope_freq_scale=0.5).label()
    assert "n_ctx 256 (shift)" in label and "repeat_penalty 1.1" in label
    assert "rope scale 0.5" in label
    assert XllamaSettings().label() == "1t, batch 2048/512"


def test_mistral_front_without_bos_uses_its_own_template(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shadow_burnin.io.servers.mistral_front.cache_dir", lambda: tmp_path)
    with_bos, without = raw_template_path(), raw_template_path(bos=False)
    assert with_bos != without
    assert with_bos.read_text() == RAW_TEMPLATE and "bos_token" in RAW_TEMPLATE
    assert without.read_text() == RAW_TEMPLATE_NO_BOS and "bos_token" not in without.read_text()
    assert MistralSettings().label() == "mistral.rs 1t"
    assert MistralSettings(bos=False, space_prefix=True).label() == \
        "mistral.rs 1t, no BOS, space prefix on"


def test_tokenizer_variants_drop_bos_or_add_a_space_prefix() -> None:
    from tokenizers import Tokenizer

    from shadow_burnin.io.servers.gguf_tokenizer import ensure_tokenizer_json

    model = ensure_model()
    paths = {name: ensure_tokenizer_json(model, **kw) for name, kw in (
        ("right", {}), ("no-bos", {"bos": False}), ("prefix", {"space_prefix": True}))}
    assert len(set(paths.values())) == 3  # each variant is its own cached file
    ids = {name: Tokenizer.from_file(str(p)).encode("The capital of France is").ids
           for name, p in paths.items()}
    assert ids["right"][0] == 2  # <bos>
    assert ids["no-bos"] == ids["right"][1:]
    assert ids["prefix"][0] == 2 and ids["prefix"] != ids["right"]
    right_tok = Tokenizer.from_file(str(paths["right"]))
    prefix_tok = Tokenizer.from_file(str(paths["prefix"]))
    assert prefix_tok.id_to_token(ids["prefix"][1]).startswith("▁")
    assert not right_tok.id_to_token(ids["right"][1]).startswith("▁")
