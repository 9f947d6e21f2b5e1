# ruff: noqa: E501  (captured server samples are kept verbatim, one per line)
"""Every logprob shape met, read from samples captured from the real servers.

Samples (trimmed to the ``logprobs`` part; captured on Gemma 3 270M Q4_K_M):
``LS_*`` from llama.cpp's C++ ``llama-server`` (llama-cpp-python 0.3.36's vendored
llama.cpp), ``LCP_*`` from llama-cpp-python 0.3.36's OpenAI server.
"""

from __future__ import annotations

import math

import orjson
import pytest

from shadow_burnin.core.logprobs import parse, shape_of
from shadow_burnin.core.verdict import token_verdict

LS_COMPLETIONS = orjson.loads(r'''{"content": [{"id": 506, "token": " the", "bytes": [32, 116, 104, 101], "logprob": -1.5936475992202759, "top_logprobs": [{"id": 506, "token": " the", "bytes": [32, 116, 104, 101], "logprob": -1.5936475992202759}, {"id": 496, "token": " a", "bytes": [32, 97], "logprob": -2.2898948192596436}, {"id": 9079, "token": " Paris", "bytes": [32, 80, 97, 114, 105, 115], "logprob": -2.419296979904175}]}, {"id": 5279, "token": " capital", "bytes": [32, 99, 97, 112, 105, 116, 97, 108], "logprob": -0.6523138880729675, "top_logprobs": [{"id": 5279, "token": " capital", "bytes": [32, 99, 97, 112, 105, 116, 97, 108], "logprob": -0.6523138880729675}, {"id": 1346, "token": " most", "bytes": [32, 109, 111, 115, 116], "logprob": -2.7160441875457764}, {"id": 7488, "token": " largest", "bytes": [32, 108, 97, 114, 103, 101, 115, 116], "logprob": -2.8816335201263428}]}, {"id": 529, "token": " of", "bytes": [32, 111, 102], "logprob": -0.1035112664103508, "top_logprobs": [{"id": 529, "token": " of", "bytes": [32, 111, 102], "logprob": -0.1035112664103508}, {"id": 3207, "token": " city", "bytes": [32, 99, 105, 116, 121], "logprob": -2.7486298084259033}, {"id": 532, "token": " and", "bytes": [32, 97, 110, 100], "logprob": -4.9826884269714355}]}, {"id": 506, "token": " the", "bytes": [32, 116, 104, 101], "logprob": -0.925360918045044, "top_logprobs": [{"id": 506, "token": " the", "bytes": [32, 116, 104, 101], "logprob": -0.925360918045044}, {"id": 7001, "token": " France", "bytes": [32, 70, 114, 97, 110, 99, 101], "logprob": -1.600917100906372}, {"id": 496, "token": " a", "bytes": [32, 97], "logprob": -3.2822163105010986}]}]}''')

LS_COMPLETIONS_STREAM = orjson.loads(r'''[{"content": [{"id": 506, "token": " the", "bytes": [32, 116, 104, 101], "logprob": -1.5936477184295654, "top_logprobs": [{"id": 506, "token": " the", "bytes": [32, 116, 104, 101], "logprob": -1.5936477184295654}, {"id": 496, "token": " a", "bytes": [32, 97], "logprob": -2.2898948192596436}]}]}, {"content": [{"id": 5279, "token": " capital", "bytes": [32, 99, 97, 112, 105, 116, 97, 108], "logprob": -0.6523138880729675, "top_logprobs": [{"id": 5279, "token": " capital", "bytes": [32, 99, 97, 112, 105, 116, 97, 108], "logprob": -0.6523138880729675}, {"id": 1346, "token": " most", "bytes": [32, 109, 111, 115, 116], "logprob": -2.7160441875457764}]}]}]''')

LS_NATIVE = orjson.loads(r'''[{"id": 506, "token": " the", "bytes": [32, 116, 104, 101], "logprob": -1.5936477184295654, "top_logprobs": [{"id": 506, "token": " the", "bytes": [32, 116, 104, 101], "logprob": -1.5936477184295654}, {"id": 496, "token": " a", "bytes": [32, 97], "logprob": -2.2898948192596436}]}, {"id": 5279, "token": " capital", "bytes": [32, 99, 97, 112, 105, 116, 97, 108], "logprob": -0.6523138880729675, "top_logprobs": [{"id": 5279, "token": " capital", "bytes": [32, 99, 97, 112, 105, 116, 97, 108], "logprob": -0.6523138880729675}, {"id": 1346, "token": " most", "bytes": [32, 109, 111, 115, 116], "logprob": -2.7160441875457764}]}]''')

LS_NATIVE_STREAM = orjson.loads(r'''[{"content": " the", "completion_probabilities": [{"id": 506, "token": " the", "bytes": [32, 116, 104, 101], "logprob": -1.5936477184295654, "top_logprobs": [{"id": 506, "token": " the", "bytes": [32, 116, 104, 101], "logprob": -1.5936477184295654}, {"id": 496, "token": " a", "bytes": [32, 97], "logprob": -2.2898948192596436}]}]}, {"content": " capital", "completion_probabilities": [{"id": 5279, "token": " capital", "bytes": [32, 99, 97, 112, 105, 116, 97, 108], "logprob": -0.6523138880729675, "top_logprobs": [{"id": 5279, "token": " capital", "bytes": [32, 99, 97, 112, 105, 116, 97, 108], "logprob": -0.6523138880729675}, {"id": 1346, "token": " most", "bytes": [32, 109, 111, 115, 116], "logprob": -2.7160441875457764}]}]}]''')

LS_NATIVE_POST_SAMPLING = orjson.loads(r'''[{"id": 506, "token": " the", "bytes": [32, 116, 104, 101], "prob": 1.0, "top_probs": [{"id": 506, "token": " the", "bytes": [32, 116, 104, 101], "prob": 1.0}]}]''')

LS_EMOJI = orjson.loads(r'''{"text": "\ud83e\udebc\ufffd", "index": 0, "logprobs": {"content": [{"id": 426, "token": "\ud83e\udebc", "bytes": [240, 159, 170, 188], "logprob": -2.517043352127075, "top_logprobs": [{"id": 426, "token": "\ufffd", "bytes": [188], "logprob": -2.517043352127075}, {"id": 420, "token": "\ufffd", "bytes": [182], "logprob": -2.7114479541778564}]}]}, "finish_reason": "length"}''')

LCP_COMPLETIONS = orjson.loads(r'''{"text_offset": [24, 28, 36, 39], "token_logprobs": [-1.719446063041687, -0.797619640827179, -0.10409902036190033, -1.6239771842956543], "tokens": [" the", " capital", " of", " France"], "top_logprobs": [{" the": -1.719446063041687, " a": -2.2265567779541016, " Paris": -2.395040512084961}, {" capital": -0.797619640827179, " city": -2.6056506633758545, " most": -2.6455161571502686}, {" of": -0.10409902036190033, " city": -2.7675302028656006, " and": -4.875243663787842}, {" the": -0.8598646521568298, " France": -1.6239771842956543, " a": -3.2601656913757324}]}''')

LCP_COMPLETIONS_STREAM = orjson.loads(r'''[{"tokens": [" the"], "text_offset": [24], "token_logprobs": [-1.719446063041687], "top_logprobs": [{" the": -1.719446063041687, " a": -2.2265567779541016}]}, {"tokens": [" capital"], "text_offset": [28], "token_logprobs": [-0.797619640827179], "top_logprobs": [{" capital": -0.797619640827179, " city": -2.6056506633758545}]}, {"tokens": [" of"], "text_offset": [36], "token_logprobs": [-0.10409902036190033], "top_logprobs": [{" of": -0.10409902036190033, " city": -2.7675302028656006}]}]''')

LCP_EMOJI = orjson.loads(r'''{"text": "\ud83e\udebc\ud83e\udece", "index": 0, "logprobs": {"text_offset": [17, 17, 17, 17, 18, 18, 18, 18], "token_logprobs": [-0.20865820348262787, -0.0006744970451109111, -0.5229808688163757, -2.5876736640930176, -0.08311712741851807, -0.00013934595335740596, -1.8796470165252686, -1.4101426601409912], "tokens": ["", "", "", "", "", "", "", ""], "top_logprobs": [{"": -0.20865820348262787, "\n\n": -3.40383243560791}, {"": -0.0006744970451109111}, {"": -0.5229808688163757}, {"": -2.5876736640930176}, {"": -0.08311712741851807, "\n\n": -3.720832347869873}, {"": -0.00013934595335740596}, {"": -1.8796470165252686}, {"": -1.4101426601409912}]}, "finish_reason": "length"}''')

LCP_CHAT_EMPTY = orjson.loads(r'''{"content": [], "refusal": null}''')


def texts(tokens) -> list[str]:
    return [t.token for t in tokens]


def test_llama_server_completions_use_the_chat_style_content_list() -> None:
    assert shape_of(LS_COMPLETIONS) == "content"
    tokens = parse(LS_COMPLETIONS)
    assert tokens is not None
    assert texts(tokens) == [" the", " capital", " of", " the"]
    first = tokens[0]
    assert first.raw == b" the" and first.logprob == pytest.approx(-1.5936476)
    assert [a.token for a in first.top] == [" the", " a", " Paris"]
    assert not any(t.merged for t in tokens)


def test_llama_server_completions_stream_chunks_are_concatenated() -> None:
    tokens = parse(LS_COMPLETIONS_STREAM)
    assert tokens is not None and texts(tokens) == [" the", " capital"]
    assert [len(t.top) for t in tokens] == [2, 2]


@pytest.mark.parametrize("raw", [LS_NATIVE, LS_NATIVE_STREAM], ids=["whole", "stream"])
def test_llama_server_native_completion_probabilities(raw) -> None:
    assert shape_of(raw) == "native"
    tokens = parse(raw)
    assert tokens is not None and texts(tokens) == [" the", " capital"]
    assert tokens[1].top[1].token == " most"


def test_llama_server_native_post_sampling_probs() -> None:
    tokens = parse(LS_NATIVE_POST_SAMPLING)
    assert tokens is not None and tokens[0].logprob == 0.0
    assert tokens[0].top[0].logprob == 0.0 == math.log(1.0)


def test_llama_server_reports_byte_pieces_of_one_character_as_one_entry() -> None:
    # the reply ends in a cut character (U+FFFD) that has no entry at all
    assert LS_EMOJI["text"] == "\U0001fabc\ufffd"
    tokens = parse(LS_EMOJI["logprobs"], LS_EMOJI["text"])
    assert tokens is not None and len(tokens) == 1
    emoji = tokens[0]
    assert emoji.raw == "\U0001fabc".encode() and emoji.merged
    assert [a.raw for a in emoji.top] == [b"\xbc", b"\xb6"]  # the last piece's top-K


def test_llama_cpp_python_completions_openai_shape() -> None:
    assert shape_of(LCP_COMPLETIONS) == "openai"
    tokens = parse(LCP_COMPLETIONS, " the capital of France")
    assert tokens is not None
    assert texts(tokens) == [" the", " capital", " of", " France"]
    assert tokens[0].raw is None and tokens[0].top[0].token == " the"
    # top-K sorted best first; the chosen token is not its own top-1 here
    assert [a.token for a in tokens[3].top] == [" the", " France", " a"]


def test_llama_cpp_python_stream_chunks_are_concatenated() -> None:
    tokens = parse(LCP_COMPLETIONS_STREAM, " the capital of")
    assert tokens is not None and texts(tokens) == [" the", " capital", " of"]


def test_llama_cpp_python_byte_pieces_are_merged_by_text_offset() -> None:
    text = LCP_EMOJI["text"]
    assert text == "\U0001fabc\U0001face"
    tokens = parse(LCP_EMOJI["logprobs"], text)
    assert tokens is not None
    assert texts(tokens) == ["\U0001fabc", "\U0001face"] and all(t.merged for t in tokens)
    assert tokens[0].logprob == pytest.approx(-2.5876737)  # the last piece's
    # without the reply text the eight empty pieces stay as they are
    assert len(parse(LCP_EMOJI["logprobs"]) or []) == 8


def test_the_two_servers_agree_on_the_first_emoji_then_diverge() -> None:
    ls = parse(LS_EMOJI["logprobs"], LS_EMOJI["text"])
    lcp = parse(LCP_EMOJI["logprobs"], LCP_EMOJI["text"])
    v = token_verdict(ls, lcp)
    # llama-server has no entry for the cut second character: its tokens end first
    assert v.verdict == "unexplained" and v.divergence_token == 1


def test_llama_cpp_python_chat_with_no_tokens() -> None:
    assert shape_of(LCP_CHAT_EMPTY) == "content"
    assert parse(LCP_CHAT_EMPTY) == []


def test_openai_bytes_spelling() -> None:
    # OpenAI's documented spelling of a partial-character token in the legacy shape
    raw = {"tokens": ["bytes:\\xe6\\x97", "bytes:\\xa5"], "token_logprobs": [-0.1, -0.2],
           "top_logprobs": [{"bytes:\\xe6\\x97": -0.1}, {"bytes:\\xa5": -0.2}]}
    tokens = parse(raw)
    assert tokens is not None and tokens[0].raw == b"\xe6\x97" and tokens[1].raw == b"\xa5"
    assert tokens[0].top[0].raw == b"\xe6\x97"


@pytest.mark.parametrize("raw", [None, {}, [], "x", {"content": None}, [{"foo": 1}]])
def test_nothing_to_read(raw) -> None:
    assert parse(raw) is None


def test_malformed_entries_are_skipped() -> None:
    raw = {"content": [{"token": " a", "logprob": "x", "top_logprobs": [{"token": 1}]},
                       "junk", {"logprob": -1.0}]}
    tokens = parse(raw)
    assert tokens is not None and len(tokens) == 1
    assert tokens[0].logprob is None and tokens[0].top == ()
