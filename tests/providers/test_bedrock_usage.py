"""Bedrock usage readers (pure functions of botocore's response dicts), including the cache
misreads other meters are known for."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from aerostack_meter import Usage
from aerostack_meter._usage import apply_policy
from aerostack_meter.providers._bedrock_usage import (
    _converse_usage,
    _header_usage,
    chunk_reading,
    chunk_text_chars,
    chunk_usage,
    converse_event_chars,
    converse_event_usage,
    converse_usage,
    header_usage,
    metrics_usage,
    quick_chunk_chars,
)

CACHED = {"inputTokens": 12, "outputTokens": 30, "totalTokens": 1042,
          "cacheReadInputTokens": 800, "cacheWriteInputTokens": 200}


def test_converse_plain() -> None:
    u = converse_usage({"usage": {"inputTokens": 6, "outputTokens": 10, "totalTokens": 16}}, "m")
    assert u == Usage("bedrock", "m", 6, 10, 16)


def test_converse_input_excludes_cache_total_includes_it() -> None:
    u = converse_usage({"usage": CACHED}, "m")
    assert u is not None
    assert (u.input_tokens, u.cached_input_tokens, u.cache_write_tokens) == (1012, 800, 200)
    assert u.total_tokens == 1042 == u.input_tokens + u.output_tokens
    # split bills the fresh input once and each cache part once
    assert apply_policy("split", u) == {"input_tokens": 12, "output_tokens": 30,
                                        "cached_input_tokens": 800, "cache_write_tokens": 200}


def test_converse_stream_metadata_event() -> None:
    assert converse_event_usage({"contentBlockDelta": {"delta": {"text": "hi"}}}) is None
    assert converse_event_chars({"contentBlockDelta": {"delta": {"text": "hello"}, "contentBlockIndex": 0}}) == 5
    u = converse_event_usage({"metadata": {"usage": CACHED, "metrics": {"latencyMs": 3}}}, "m")
    assert u is not None and u.total_tokens == 1042


@pytest.mark.parametrize("usage", [
    None, {}, {"inputTokens": -1, "outputTokens": 2}, {"inputTokens": "6", "outputTokens": 2},
    {"inputTokens": 6, "outputTokens": 2, "totalTokens": "8"},
    {"inputTokens": 6, "outputTokens": 2, "cacheReadInputTokens": 2**70},
], ids=["none", "empty", "negative", "string", "string-total", "huge-cache"])
def test_converse_hostile(usage: Any) -> None:
    assert converse_usage({"usage": usage}) is None


def _headers(**h: str) -> dict[str, Any]:
    return {"ResponseMetadata": {"HTTPHeaders": h}, "body": object()}


def test_invoke_headers_never_touch_the_body() -> None:
    response = _headers(**{"x-amzn-bedrock-input-token-count": "4",
                           "x-amzn-bedrock-output-token-count": "10",
                           "x-amzn-bedrock-cache-read-input-token-count": "2"})
    u = header_usage(response, "anthropic.claude")
    assert u == Usage("bedrock", "anthropic.claude", 6, 10, 16, cached_input_tokens=2)


@pytest.mark.parametrize("value", ["-6", '"6"', "1180591620717411303424", "", "six"])
def test_invoke_hostile_headers(value: str) -> None:
    response = _headers(**{"x-amzn-bedrock-input-token-count": value,
                           "x-amzn-bedrock-output-token-count": "10"})
    assert header_usage(response) is None


def test_invoke_without_count_headers_is_missing() -> None:
    assert header_usage(_headers()) is None


def _chunk(data: Any) -> dict[str, Any]:
    return {"chunk": {"bytes": json.dumps(data).encode()}}


def test_invocation_metrics_in_last_chunk() -> None:
    assert chunk_usage(_chunk({"type": "content_block_delta", "delta": {"text": "hi"}})) is None
    last = _chunk({"type": "message_stop", "amazon-bedrock-invocationMetrics": {
        "inputTokenCount": 4, "outputTokenCount": 10, "invocationLatency": 1, "firstByteLatency": 1,
        "cacheReadInputTokenCount": 2, "cacheWriteInputTokenCount": 0}})
    assert chunk_usage(last, "m") == Usage("bedrock", "m", 6, 10, 16, cached_input_tokens=2)
    assert metrics_usage({"inputTokenCount": 1}) is None


def test_chunk_text_chars_by_model_family() -> None:
    assert chunk_text_chars(_chunk({"type": "content_block_delta", "delta": {"type": "text_delta", "text": "abc"}})) == 3
    assert chunk_text_chars(_chunk({"generation": "abcd"})) == 4
    assert chunk_text_chars(_chunk({"outputText": "ab"})) == 2
    assert chunk_text_chars(_chunk({"choices": [{"delta": {"content": "abcde"}}]})) == 5
    assert chunk_text_chars({"chunk": {"bytes": b"not json"}}) == 0


# -- the one-frame readers agree with the general rules ----------------------------------------

# a loaded 2-core machine makes the first draws slow: not a property of the readers
_settings = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_count_like = st.one_of(st.none(), st.integers(-5, 2**54), st.sampled_from([0, 2**53 - 1, 2**53]),
                        st.booleans(), st.floats(allow_nan=True), st.text(max_size=4))


@_settings
@given(st.dictionaries(st.sampled_from(["inputTokens", "outputTokens", "totalTokens",
                                        "cacheReadInputTokens", "cacheWriteInputTokens"]), _count_like))
@example({"inputTokens": 6, "outputTokens": 10})
@example({"inputTokens": 6, "outputTokens": 10, "totalTokens": 0, "cacheReadInputTokens": None})
@example({"inputTokens": 2**52, "outputTokens": 2**52})
def test_converse_one_frame_reader_agrees_with_the_general_rules(usage: dict[str, Any]) -> None:
    assert converse_usage({"usage": usage}, "m") == _converse_usage({"usage": usage}, "m")


_header_like = st.one_of(st.none(), st.sampled_from(["0", "12", " 12 ", "-1", "1e3", "²", "١٢", "",
                                                     "9" * 15, "9" * 16, "012"]),
                         st.text(max_size=4), st.integers(0, 99))


@_settings
@given(st.dictionaries(st.sampled_from(["x-amzn-bedrock-input-token-count",
                                        "x-amzn-bedrock-output-token-count",
                                        "x-amzn-bedrock-cache-read-input-token-count",
                                        "x-amzn-bedrock-cache-write-input-token-count"]), _header_like))
@example({"x-amzn-bedrock-input-token-count": "4", "x-amzn-bedrock-output-token-count": "10"})
def test_header_one_frame_reader_agrees_with_the_general_rules(headers: dict[str, Any]) -> None:
    response = {"ResponseMetadata": {"HTTPHeaders": {k: v for k, v in headers.items() if v is not None}}}
    try:
        expected: Any = _header_usage(response, "m")
    except Exception as exc:  # the general rules refuse it: so must the one-frame reader
        with pytest.raises(type(exc)):
            header_usage(response, "m")
        return
    assert header_usage(response, "m") == expected


def test_header_counts_in_other_digits_are_read_and_odd_ones_are_missing() -> None:
    def read(value: Any) -> Usage | None:
        return header_usage(_headers(**{"x-amzn-bedrock-input-token-count": value,
                                        "x-amzn-bedrock-output-token-count": "1"}))

    assert read("١٢") == Usage("bedrock", None, 12, 1, 13)  # what int() reads, it bills
    assert read("²") is None  # a digit int() refuses: missing, not an internal error
    assert read(" 7 ") == Usage("bedrock", None, 7, 1, 8)


# -- an invoke stream's chunk: the quick reader agrees with parsing it whole --------------------

_METRICS = b"amazon-bedrock-invocationMetrics"


def _raw(raw: bytes) -> dict[str, Any]:
    return {"chunk": {"bytes": raw}}


def _delta(index: Any, text: str, kind: str = "text", *, compact: bool = True) -> bytes:
    data = {"type": "content_block_delta", "index": index, "delta": {"type": f"{kind}_delta", kind: text}}
    return json.dumps(data, separators=(",", ":") if compact else None, ensure_ascii=False).encode()


_texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=30)
_kinds = st.sampled_from(["text", "thinking"])


@_settings
@given(st.integers(0, 10**12), _texts, _kinds, st.booleans(), st.booleans())
@example(0, "hello ", "text", True, False)
@example(12, 'a "quoted" \\ line\n', "thinking", True, True)
def test_quick_chunk_chars_counts_every_delta_as_the_whole_parse_does(
        index: int, text: str, kind: str, compact: bool, ascii_only: bool) -> None:
    raw = _delta(index, text, kind, compact=compact)
    if ascii_only:
        raw = json.dumps(json.loads(raw), separators=(",", ":") if compact else None).encode()
    event = _raw(raw)
    assert quick_chunk_chars(event) == chunk_text_chars(event) == len(text)


_edits = st.lists(st.tuples(st.integers(0, 200), st.binary(max_size=3)), max_size=3)


@_settings
@given(st.integers(0, 20), _texts, _kinds, _edits)
@example(0, "hi", "text", [(200, b"x")])  # something after the object
@example(0, "hi", "text", [(78, b"\x01")])  # a control character in the text
@example(0, "hi", "text", [(80, b'"')])  # the string ends early
def test_quick_chunk_chars_on_damaged_chunks_agrees_or_steps_aside(
        index: int, text: str, kind: str, edits: list[tuple[int, bytes]]) -> None:
    raw = _delta(index, text, kind)
    for at, insert in edits:
        raw = raw[:at] + insert + raw[at:]
    event = _raw(raw)
    quick = quick_chunk_chars(event)
    whole = chunk_text_chars(event)
    if chunk_usage(event) is None and _METRICS not in raw:
        assert quick == whole
    else:
        assert quick is None


@pytest.mark.parametrize("data", [
    {"type": "message_start", "message": {"content": [], "usage": {"input_tokens": 4}}},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{\"a"}},
    {"type": "content_block_stop", "index": 0},
    {"generation": "abcd", "prompt_token_count": None, "generation_token_count": 2, "stop_reason": None},
    {"outputText": "ab", "index": 0},
    {"contentBlockDelta": {"delta": {"text": "abc"}, "contentBlockIndex": 0}},
    {"choices": [{"delta": {"content": "abcde"}}]},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "a"}, "text": "xyz"},
], ids=["message_start", "block_start", "tool_json", "block_stop", "llama", "titan", "nova", "openai",
        "extra-key"])
def test_quick_chunk_chars_on_other_chunks(data: dict[str, Any]) -> None:
    for separators in ((",", ":"), None):
        event = _raw(json.dumps(data, separators=separators).encode())
        assert quick_chunk_chars(event) == chunk_text_chars(event)


def test_quick_chunk_chars_leaves_the_metrics_chunk_and_other_events_to_the_general_readers() -> None:
    last = _raw(json.dumps({"type": "message_stop", "amazon-bedrock-invocationMetrics": {
        "inputTokenCount": 4, "outputTokenCount": 10}}, separators=(",", ":")).encode())
    assert quick_chunk_chars(last) is None and chunk_usage(last) is not None
    assert quick_chunk_chars({"chunk": {"bytes": bytearray(b"{}")}}) is None
    assert quick_chunk_chars({"internalServerException": {"message": "x"}}) is None


@pytest.mark.parametrize("event", [
    _raw(json.dumps({"type": "message_stop", "amazon-bedrock-invocationMetrics": {
        "inputTokenCount": 4, "outputTokenCount": 10, "cacheReadInputTokenCount": 2}}).encode()),
    _raw(json.dumps({"outputText": "abc", "amazon-bedrock-invocationMetrics": {
        "inputTokenCount": 4, "outputTokenCount": 10}}).encode()),
    _raw(b'{"amazon-bedrock-invocationMetrics": {"inputTokenCount": "4"}}'),
    _raw(b'{"amazon-bedrock-invocation\\u004detrics": {"inputTokenCount": 4, "outputTokenCount": 1}}'),
    _raw(b'{"amazon-bedrock-invocationMetrics" nope'),
    {"chunk": {"bytes": bytearray(b'{"generation": "ab", "amazon-bedrock-invocationMetrics": {'
                                  b'"inputTokenCount": 1, "outputTokenCount": 2}}')}},
    _raw(b"[1]"), {"chunk": {}}, {"internalServerException": {"message": "x"}},
], ids=["anthropic-last", "titan-last-with-text", "hostile-count", "escaped-key", "not-json",
        "bytearray", "not-object", "no-bytes", "exception"])
def test_chunk_reading_is_both_readers_from_one_parse(event: dict[str, Any]) -> None:
    assert chunk_reading(event, "m") == (chunk_usage(event, "m"), chunk_text_chars(event))
