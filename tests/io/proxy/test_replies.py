"""Reading a reply the mirror collected as bytes (``io.proxy.replies``): the same codes as
the run's client, the time to first text from the read that brought it."""

from __future__ import annotations

import gzip
import pickle

import orjson
import pytest

from shadow_burnin.io.proxy.mirror import Mirrored
from shadow_burnin.io.proxy.replies import Collector, RawReply, parse, scrub, secrets_of

JSON = {b"content-type": b"application/json"}
SSE = {b"content-type": b"text/event-stream"}


def whole(text: str = "Paris.", **extra: object) -> bytes:
    return orjson.dumps({"choices": [{"text": text, "finish_reason": "stop"}],
                         "usage": {"completion_tokens": 3}, **extra})


def event(text: str, finish: str | None = None) -> bytes:
    return b"data: " + orjson.dumps({"choices": [{"text": text,
                                                   "finish_reason": finish}]}) + b"\n\n"


def raw(chunks: list[bytes], headers: dict[bytes, bytes], *, status: int = 200,
        stream: bool = False, times: list[float] | None = None, end: float = 10.5,
        error: str | None = None) -> RawReply:
    return RawReply(start=10.0, stream=stream, status=status, headers=dict(headers),
                    chunks=chunks, times=times or [], size=sum(map(len, chunks)), end=end,
                    error=error)


def test_a_whole_reply() -> None:
    reply = parse(raw([whole()[:10], whole()[10:]], JSON), "completions", False, 1 << 20)
    assert (reply.text, reply.error, reply.finish_reason, reply.completion_tokens) == (
        "Paris.", None, "stop", 3)
    assert reply.latency_ms == 500.0 and reply.ttft_ms is None


def test_a_stream_times_its_first_text_and_its_end_by_the_reads_that_brought_them() -> None:
    chunks = [b": comment\n\n", event("Pa"), event("ris", "stop") + b"data: [DONE]\n\n"]
    reply = parse(raw(chunks, SSE, stream=True, times=[10.1, 10.2, 10.3]), "completions",
                  True, 1 << 20)
    assert reply.text == "Paris" and reply.error is None
    assert reply.ttft_ms == 200.0 and reply.latency_ms == 300.0


def test_an_event_split_across_reads_counts_from_the_read_that_completed_it() -> None:
    data = event("Paris") + b"data: [DONE]\n\n"
    reply = parse(raw([data[:7], data[7:]], SSE, stream=True, times=[10.1, 10.4]),
                  "completions", True, 1 << 20)
    assert reply.text == "Paris" and reply.ttft_ms == 400.0


@pytest.mark.parametrize(("status", "headers", "code"), [
    (429, {b"retry-after": b"7"}, "http-429: retry-after 7"),
    (429, {b"retry-after": b"\x1b[31mnope"}, "http-429"),
    (503, {}, "http-503"),
    (302, {b"location": b"http://elsewhere/\r\nx"}, "redirect: 302 to http://elsewhere/ x"),
])
def test_an_error_status(status: int, headers: dict[bytes, bytes], code: str) -> None:
    reply = parse(raw([b"{}"], headers, status=status), "completions", False, 1 << 20)
    assert reply.error == code and reply.text is None and reply.status == status


@pytest.mark.parametrize(("chunks", "headers", "stream", "code"), [
    ([b"{nope"], JSON, False, "invalid-json"),
    ([b'{"choices": []}'], JSON, False, "bad-shape"),
    ([b"\xff\xfe"], JSON, False, "invalid-utf8"),
    ([b"x" * 200], {b"content-length": b"200"}, False, "too-large: 200 bytes announced"),
    ([b"x" * 60, b"x" * 60], {}, False, "too-large: reply over 100 bytes"),
    ([event("x" * 60), event("y" * 60)], SSE, True, "too-large: stream over 100 bytes"),
    ([b"hello"], {b"content-type": b"text/plain"}, True, "not-a-stream"),
    ([event("Pa")], SSE, True, "stream-cut"),
    ([event("Pa", "stop")], SSE, True, "stream-incomplete"),
])
def test_what_the_bytes_say(chunks: list[bytes], headers: dict[bytes, bytes], stream: bool,
                            code: str) -> None:
    reply = parse(raw(chunks, headers, stream=stream, times=[10.1] * len(chunks)),
                  "completions", stream, 100)
    assert reply.error is not None and reply.error.startswith(code), reply.error
    if code == "stream-cut":
        assert reply.text == "Pa" and reply.truncated  # the text up to the cut is kept
    elif code == "stream-incomplete":
        assert reply.text == "Pa" and not reply.truncated
    else:
        assert reply.text is None


def test_a_json_reply_to_a_streamed_request_is_read_whole() -> None:
    reply = parse(raw([whole()], JSON, stream=True), "completions", True, 1 << 20)
    assert reply.text == "Paris." and reply.extra == {"unstreamed": True}


def test_a_transport_error_wins_and_a_stream_keeps_its_text_up_to_the_cut() -> None:
    cut = parse(raw([event("Pa")], SSE, stream=True, times=[10.1], error="client-cancelled"),
                "completions", True, 1 << 20)
    assert (cut.error, cut.text, cut.truncated) == ("client-cancelled", "Pa", True)
    plain = parse(raw([whole()[:5]], JSON, error="connection-reset: closed early"),
                  "completions", False, 1 << 20)
    assert plain.error == "connection-reset: closed early" and plain.text is None
    no_head = parse(RawReply(start=1.0, end=1.25, error="connection-refused: Connection "
                             "refused"), "completions", False, 1 << 20)
    assert no_head.status is None and no_head.latency_ms == 250.0
    assert no_head.error == "connection-refused: Connection refused"


def test_a_stream_whose_end_marker_came_is_whole_whatever_the_connection_did_after() -> None:
    data = event("Paris", "stop") + b"data: [DONE]\n\n"
    reply = parse(raw([data], SSE, stream=True, times=[10.2], error="timeout: no complete "
                      "reply within 1 s"), "completions", True, 1 << 20)
    assert reply.error is None and reply.text == "Paris" and reply.latency_ms == 200.0


def test_a_gzip_reply_is_inflated_for_reading() -> None:
    body = gzip.compress(event("Paris", "stop") + b"data: [DONE]\n\n")
    reply = parse(raw([body[:9], body[9:]], {**SSE, b"content-encoding": b"gzip"},
                      stream=True, times=[10.1, 10.2]), "completions", True, 1 << 20)
    assert reply.text == "Paris" and reply.error is None


def test_chat_and_native_dialects() -> None:
    chat = orjson.dumps({"choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}]})
    assert parse(raw([chat], JSON), "chat", False, 1 << 20).text == "hi"
    native = b'data: {"content": "hi"}\n\ndata: {"content": "", "stop": true, ' \
             b'"stop_type": "eos", "tokens_predicted": 1}\n\n'
    reply = parse(raw([native], SSE, stream=True, times=[10.1]), "native", True, 1 << 20)
    assert (reply.text, reply.finish_reason, reply.completion_tokens) == ("hi", "stop", 1)


def test_the_collector_keeps_up_to_the_cap_then_only_counts() -> None:
    got = RawReply(start=0.0, stream=True, status=200)
    feed = Collector(got, 10)
    for piece in (b"12345", b"678901", b"abc", b"def"):
        feed(piece)
    assert got.chunks == [b"12345", b"678901"] and got.size == 17 and len(got.times) == 2
    assert parse(got, "completions", True, 10).error == "too-large: stream over 10 bytes"


def test_secrets_echoed_by_a_server_are_redacted() -> None:
    secrets = secrets_of("sk-shadow-secret-123", None, "abc")
    assert secrets == ("sk-shadow-secret-123",)
    reply = parse(raw([whole("key sk-shadow-secret-123 here")], JSON), "completions", False,
                  1 << 20)
    scrub(reply, secrets)
    assert "sk-shadow" not in (reply.text or "") and reply.extra["redacted"] is True


def test_a_job_crosses_to_the_shadow_process_whole() -> None:
    body = {"prompt": "p", "temperature": 0}
    raw_body = orjson.dumps(body)
    job = Mirrored(ts="t", path="/v1/completions", api="completions", stream=True, body=body,
                   shadow_body=raw_body, raw=raw_body, cancelled=True)
    job.v1_raw = raw([event("Pa")], SSE, stream=True, times=[10.1], error="client-cancelled")
    back = pickle.loads(pickle.dumps([job, job], protocol=pickle.HIGHEST_PROTOCOL))
    assert back[0] is back[1]
    got = back[0]
    assert (got.body, got.raw, got.shadow_body, got.cancelled) == (body, raw_body, raw_body,
                                                                   True)
    assert got.v1_raw == job.v1_raw
    parsed = Mirrored(ts="t", path="/x", api="chat", stream=False, body={"a": [1]},
                      shadow_body=b"{}")
    assert pickle.loads(pickle.dumps(parsed)).body == {"a": [1]}  # no bytes kept: the parse
