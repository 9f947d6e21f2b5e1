"""The mistral.rs front: its mapping (unit), and on the real engine that it adds nothing.

The real tests start one xllamacpp server and one front (each in its own process) and
load the same engine in this process to compare against its direct output.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shadow_burnin.app.demo import write_demo_prompts
from shadow_burnin.io.servers.gguf_tokenizer import ensure_tokenizer_json
from shadow_burnin.io.servers.local import LocalServer, ServerPair
from shadow_burnin.io.servers.mistral_front import (
    BadRequest,
    chatml,
    mistral_front_server,
    parse_request,
    raw_template_path,
    restore_lead,
)
from shadow_burnin.io.servers.xllama import xllama_server

# ------------------------------------------------------------------------------- unit


def test_restore_lead_puts_back_exactly_the_tokens_whitespace() -> None:
    assert restore_lead("the end", [" the", " end"]) == " the end"
    assert restore_lead("Hi", ["\n\n", "Hi"]) == "\n\nHi"
    assert restore_lead(" already", [" already"]) == " already"
    assert restore_lead("x", ["x"]) == "x"
    assert restore_lead("", ["\n"]) == "\n"


def test_parse_request_maps_fields() -> None:
    ask = parse_request({"prompt": "Hello", "max_tokens": 7, "temperature": 0,
                         "logprobs": 3, "stop": "\n", "repeat_penalty": 1.0,
                         "cache_prompt": False, "logit_bias": {"5": -100}, "stream": True},
                        chat=False, alias="m")
    assert ask.prompt == "Hello" and ask.top_logprobs == 3 and ask.stream and ask.model == "m"
    assert ask.sampling == {"max_tokens": 7, "temperature": 0, "repetition_penalty": 1.0,
                            "stop_seqs": ["\n"], "logit_bias": {5: -100.0}}
    chat = parse_request({"messages": [{"role": "user", "content": "Hi"}], "logprobs": True,
                          "top_logprobs": 2}, chat=True, alias="m")
    assert chat.prompt == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert chat.top_logprobs == 2
    assert parse_request({"prompt": "x"}, chat=False, alias="m").top_logprobs is None
    for bad in ({"prompt": "x", "echo": True}, {"prompt": "x", "n": 2}, {"prompt": 3},
                {"messages": []}, [], {"prompt": "x", "logprobs": 50}):
        with pytest.raises(BadRequest):
            parse_request(bad, chat="messages" in bad if isinstance(bad, dict) else False,
                          alias="m")


def test_chatml_joins_text_parts() -> None:
    assert chatml([{"role": "system", "content": [{"type": "text", "text": "a"},
                                                  {"type": "text", "text": "b"}]}]) == (
        "<|im_start|>system\nab<|im_end|>\n<|im_start|>assistant\n")


# ------------------------------------------------------------------------------- real

PROMPTS = ("The capital of France is", "def fibonacci(n):", "Q: What is 12 * 7?\nA:")


def call(url: str, path: str, body: Any, raw: bool = False) -> Any:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(f"{url}{path}", data=data,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=300) as resp:
        payload = resp.read()
    return payload if raw else json.loads(payload)


def sse_chunks(payload: bytes) -> list[Any]:
    events = [line[6:] for line in payload.decode().splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


@pytest.fixture(scope="module")
def servers(demo_model: Path, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[dict[str, LocalServer]]:
    logs = tmp_path_factory.mktemp("front")
    pair = ServerPair(xllama_server(demo_model, name="xl", log_path=logs / "xl.log"),
                      mistral_front_server(demo_model, name="front",
                                           log_path=logs / "front.log"))
    with pair.start(timeout=300):
        yield {"xl": pair.v1, "front": pair.v2}


@pytest.fixture(scope="module")
def engine(demo_model: Path) -> Any:
    """The same engine, loaded here, to compare with its direct output."""
    from mistralrs import Runner, Which

    return Runner(which=Which.GGUF(quantized_model_id=str(demo_model.parent),
                                   quantized_filename=demo_model.name,
                                   tokenizer_json=str(ensure_tokenizer_json(demo_model))),
                  max_seqs=1, token_source="none", jinja_explicit=str(raw_template_path()),
                  prefix_cache_n=0)


@pytest.mark.e2e
def test_every_demo_prompt_tokenises_identically(servers: dict[str, LocalServer],
                                                 demo_model: Path, tmp_path: Path) -> None:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(ensure_tokenizer_json(demo_model)))
    lines = write_demo_prompts(tmp_path / "p.jsonl").read_text().splitlines()
    prompts = [json.loads(line)["prompt"] for line in lines]
    assert len(prompts) >= 100
    for text in (*prompts, "  tabs\tand\n\nHTML <table><tr>", "Ünïcödé 世界 🎉 <start_of_turn>"):
        llama = call(servers["xl"].url, "/tokenize", {"content": text, "add_special": True})
        front = call(servers["front"].url, "/tokenize", {"content": text, "add_special": True})
        assert front["tokens"] == llama["tokens"], text
        assert tok.encode(text).ids == llama["tokens"], text


@pytest.mark.e2e
@pytest.mark.parametrize("prompt", PROMPTS)
def test_front_replies_equal_the_engines_direct_output(
        servers: dict[str, LocalServer], engine: Any, prompt: str) -> None:
    from mistralrs import ChatCompletionRequest, CompletionRequest

    url = servers["front"].url
    base = {"prompt": prompt, "max_tokens": 12, "temperature": 0}
    direct = engine.send_completion_request(CompletionRequest(
        prompt=prompt, model="default", max_tokens=12, temperature=0.0))
    reply = call(url, "/v1/completions", {**base, "logprobs": 3})
    streamed = sse_chunks(call(url, "/v1/completions", {**base, "stream": True,
                                                        "logprobs": 3}, raw=True))
    text = reply["choices"][0]["text"]
    assert text == direct.choices[0].text  # the completion API's text, whitespace and all
    assert "".join(c["choices"][0]["text"] for c in streamed if c["choices"]) == text
    assert reply["usage"]["completion_tokens"] == direct.usage.completion_tokens
    assert reply["usage"]["prompt_tokens"] == direct.usage.prompt_tokens
    assert streamed[-1]["usage"] == reply["usage"]
    # the same prompt token count as llama.cpp gets for it
    llama = call(servers["xl"].url, "/v1/completions", {**base, "max_tokens": 1})
    assert reply["usage"]["prompt_tokens"] == llama["usage"]["prompt_tokens"]
    # logprobs are the engine's own (a direct chat request through the raw template)
    chat = engine.send_chat_completion_request(ChatCompletionRequest(
        messages=[{"role": "user", "content": prompt}], model="default", max_tokens=12,
        temperature=0.0, logprobs=True, top_logprobs=3))
    want = [(e.token, e.logprob, [a.token for a in e.top_logprobs])
            for e in chat.choices[0].logprobs.content]
    got = [(e["token"], e["logprob"], [a["id"] for a in e["top_logprobs"]])
           for e in reply["choices"][0]["logprobs"]["content"]]
    assert got == want
    per_chunk = [c["choices"][0]["logprobs"]["content"][0] for c in streamed if c["choices"]]
    assert [(e["token"], e["logprob"]) for e in per_chunk] == [(w[0], w[1]) for w in want]


@pytest.mark.e2e
def test_chat_is_chatml_through_the_raw_path(servers: dict[str, LocalServer]) -> None:
    url = servers["front"].url
    messages = [{"role": "user", "content": "Name a colour."}]
    chat = call(url, "/v1/chat/completions", {"messages": messages, "max_tokens": 8,
                                              "temperature": 0})
    plain = call(url, "/v1/completions", {"prompt": chatml(messages), "max_tokens": 8,
                                          "temperature": 0})
    assert chat["choices"][0]["message"]["content"] == plain["choices"][0]["text"]
    assert chat["usage"] == plain["usage"]


@pytest.mark.e2e
def test_refusals_are_http_400_with_a_reason(servers: dict[str, LocalServer]) -> None:
    url = servers["front"].url
    for body, reason in ((b"{not json", "not valid JSON"),
                         ({"prompt": "x", "echo": True, "max_tokens": 1}, "echo"),
                         ({"prompt": "x", "n": 2}, "n:"), ({"max_tokens": 1}, "prompt")):
        with pytest.raises(urllib.error.HTTPError) as info:
            call(url, "/v1/completions", body)
        assert info.value.code == 400
        assert reason in json.loads(info.value.read())["error"]["message"]
    # and the front still serves
    assert call(url, "/v1/completions", {"prompt": "Hi", "max_tokens": 2})["choices"]


@pytest.mark.e2e
def test_the_official_openai_client_works_against_both(servers: dict[str, LocalServer]
                                                       ) -> None:
    import openai

    texts = {}
    for name, server in servers.items():
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
        model = client.models.list().data[0].id
        done = client.completions.create(model=model, prompt="The capital of France is",
                                         max_tokens=6, temperature=0)
        stream = client.completions.create(model=model, prompt="The capital of France is",
                                           max_tokens=6, temperature=0, stream=True)
        streamed = "".join(c.choices[0].text for c in stream if c.choices)
        assert done.choices[0].text == streamed and done.usage is not None
        chat = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=4,
            temperature=0, logprobs=True, top_logprobs=2)
        content = chat.choices[0].logprobs.content  # type: ignore[union-attr]
        assert content and len(content[0].top_logprobs) == 2
        texts[name] = done.choices[0].text
    assert all(t.strip() for t in texts.values())
