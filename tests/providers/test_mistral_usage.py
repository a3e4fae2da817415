"""Mistral usage readers (pure functions), on the SDK's own models and on JSON bodies."""

from __future__ import annotations

from typing import Any

import pytest

from aerostack_meter import Usage
from aerostack_meter._usage import apply_policy
from aerostack_meter.providers._mistral_usage import (
    chunk_chars,
    chunk_usage,
    response_usage,
    usage_from,
)

try:
    from mistralai.client import models
except ImportError:  # pragma: no cover - 1.x
    from mistralai import models  # type: ignore[no-redef]


def test_cached_is_part_of_prompt() -> None:
    u = models.UsageInfo.model_validate({"prompt_tokens": 100, "completion_tokens": 7,
                                         "total_tokens": 107,
                                         "prompt_tokens_details": {"cached_tokens": 64}})
    usage = usage_from(u, "mistral-small", "c1")
    assert usage == Usage("mistral", "mistral-small", 100, 7, 107, cached_input_tokens=64,
                          response_id="c1")
    assert apply_policy("split", usage) == {"input_tokens": 36, "output_tokens": 7,
                                            "cached_input_tokens": 64}


def test_defaults_are_not_counts() -> None:
    # UsageInfo defaults each count to 0: an empty usage object is missing usage, not a 0 bill
    assert usage_from(models.UsageInfo.model_validate({}), "m", None) is None
    partial = usage_from(models.UsageInfo.model_validate({"prompt_tokens": 5}), "m", None)
    assert partial is not None and (partial.input_tokens, partial.total_tokens) == (5, 5)


@pytest.mark.parametrize("usage", [
    None, {"prompt_tokens": -1, "completion_tokens": 2}, {"prompt_tokens": "6", "completion_tokens": 2},
    {"prompt_tokens": 6, "completion_tokens": 2**70},
], ids=["none", "negative", "string", "huge"])
def test_hostile_json(usage: Any) -> None:
    assert response_usage({"model": "m", "id": "x", "usage": usage}) is None


@pytest.mark.parametrize(("counts", "expected"), [
    ({"prompt_tokens": -1, "completion_tokens": 2}, None),
    ({"prompt_tokens": "6", "completion_tokens": 2}, None),
    ({"prompt_tokens": 6, "completion_tokens": 2**70}, None),
    ({"prompt_tokens": 6.0, "completion_tokens": 2, "total_tokens": 0}, (6, 2, 8)),
    ({"prompt_tokens": 2**52, "completion_tokens": 2**52}, None),  # the sum: no JSON number
], ids=["negative", "string", "huge", "float", "sum-too-large"])
def test_hostile_counts_in_the_sdk_model(counts: dict[str, Any],
                                         expected: tuple[int, int, int] | None) -> None:
    # values the SDK's validation would refuse, put in place as a lenient parser might leave them
    u = models.UsageInfo.model_construct(_fields_set=set(counts), **counts)
    usage = usage_from(u, "m", "x")
    got = None if usage is None else (usage.input_tokens, usage.output_tokens, usage.total_tokens)
    assert got == expected


def test_stream_usage_on_last_event_only() -> None:
    base = {"id": "c", "model": "m", "object": "chat.completion.chunk", "created": 1}
    first = models.CompletionEvent.model_validate({"data": {
        **base, "choices": [{"index": 0, "delta": {"content": "hello"}, "finish_reason": None}]}})
    last = models.CompletionEvent.model_validate({"data": {
        **base, "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 6, "completion_tokens": 10, "total_tokens": 16}}})
    assert chunk_usage(first) is None and chunk_chars(first) == 5
    assert chunk_usage(last) == Usage("mistral", "m", 6, 10, 16, response_id="c")
