"""Bedrock usage readers (pure functions of botocore's response dicts), including the cache
misreads other meters are known for."""

from __future__ import annotations

import json
from typing import Any

import pytest

from aerostack_meter import Usage
from aerostack_meter._usage import apply_policy
from aerostack_meter.providers._bedrock_usage import (
    chunk_text_chars,
    chunk_usage,
    converse_event_chars,
    converse_event_usage,
    converse_usage,
    header_usage,
    metrics_usage,
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
