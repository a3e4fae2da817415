"""Gemini usage readers (pure functions), on the SDK's own types and on JSON bodies, including the
wrong counts other meters are known for (thinking dropped or billed twice, cache misread, zero
output in streams)."""

from __future__ import annotations

from typing import Any

import pytest
from google.genai import types
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from aerostack_meter import Usage
from aerostack_meter._usage import apply_policy
from aerostack_meter.providers._gemini_usage import (
    _general_usage,
    build_usage,
    merge_counts,
    read_counts,
    response_usage,
)


def response(**meta: Any) -> types.GenerateContentResponse:
    return types.GenerateContentResponse(
        usage_metadata=types.GenerateContentResponseUsageMetadata(**meta),
        model_version="gemini-2.5-flash", response_id="r1")


def test_plain() -> None:
    u = response_usage(response(prompt_token_count=6, candidates_token_count=10, total_token_count=16))
    assert u == Usage("gemini", "gemini-2.5-flash", 6, 10, 16, response_id="r1")


def test_thinking_is_output_once() -> None:
    # thoughts are NOT inside candidates: output = candidates + thoughts, billed once in the total
    u = response_usage(response(prompt_token_count=6, candidates_token_count=10,
                                thoughts_token_count=40, total_token_count=56))
    assert u is not None
    assert (u.input_tokens, u.output_tokens, u.reasoning_tokens, u.total_tokens) == (6, 50, 40, 56)
    assert apply_policy("tokens", u) == {"tokens": 56}  # not 96 (twice), not 16 (dropped)
    assert apply_policy("split", u) == {"input_tokens": 6, "output_tokens": 50}


def test_cached_is_part_of_prompt() -> None:
    u = response_usage(response(prompt_token_count=100, cached_content_token_count=80,
                                candidates_token_count=5, total_token_count=105))
    assert u is not None
    assert (u.input_tokens, u.cached_input_tokens, u.total_tokens) == (100, 80, 105)
    # split: the cached part is taken out of the input, not added to it
    assert apply_policy("split", u) == {"input_tokens": 20, "output_tokens": 5,
                                        "cached_input_tokens": 80}


def test_tool_use_prompt_is_input_reported_apart() -> None:
    u = response_usage(response(prompt_token_count=6, tool_use_prompt_token_count=300,
                                candidates_token_count=10, total_token_count=316))
    assert u is not None and (u.input_tokens, u.output_tokens, u.total_tokens) == (306, 10, 316)


def test_total_absent_or_zero_is_never_billed_as_zero() -> None:
    u = response_usage(response(prompt_token_count=6, candidates_token_count=10, thoughts_token_count=4))
    assert u is not None and u.total_tokens == 20
    u = response_usage(response(prompt_token_count=6, candidates_token_count=10, total_token_count=0))
    assert u is not None and u.total_tokens == 16


def test_json_body_camel_case() -> None:
    body = {"usageMetadata": {"promptTokenCount": 6, "candidatesTokenCount": 10,
                              "thoughtsTokenCount": 4, "cachedContentTokenCount": 2,
                              "totalTokenCount": 20}, "modelVersion": "m", "responseId": "x"}
    assert response_usage(body) == Usage("gemini", "m", 6, 14, 20, cached_input_tokens=2,
                                         reasoning_tokens=4, response_id="x")


@pytest.mark.parametrize("meta", [
    None,
    {},
    {"promptTokenCount": -1, "candidatesTokenCount": 3},
    {"promptTokenCount": "6", "candidatesTokenCount": 3},
    {"promptTokenCount": 6, "totalTokenCount": 2**70},
    {"promptTokenCount": 0, "candidatesTokenCount": 0, "totalTokenCount": 0},
], ids=["none", "empty", "negative", "string", "huge", "all-zero"])
def test_missing_or_hostile_usage_is_none(meta: Any) -> None:
    assert response_usage({"usageMetadata": meta}) is None


@pytest.mark.parametrize(("meta", "expected"), [
    ({"prompt_token_count": -1, "candidates_token_count": 3}, None),
    ({"prompt_token_count": "6", "candidates_token_count": 3}, None),
    ({"prompt_token_count": 6, "total_token_count": 2**70}, None),
    ({"prompt_token_count": 6, "candidates_token_count": True}, None),
    ({"prompt_token_count": 0, "candidates_token_count": 0, "total_token_count": 0}, None),
    ({"prompt_token_count": 6.0, "candidates_token_count": 10, "total_token_count": 16},
     Usage("gemini", "gemini-2.5-flash", 6, 10, 16, response_id="r1")),
    ({"prompt_token_count": 2**52, "candidates_token_count": 2**52}, None),  # the sum: no JSON number
], ids=["negative", "string", "huge", "bool", "all-zero", "float", "sum-too-large"])
def test_hostile_counts_in_the_sdk_type(meta: dict[str, Any], expected: Usage | None) -> None:
    # values the SDK's validation would refuse, put in place as a lenient parser might leave them
    # (the one-pass reader of the SDK type hands anything but an int count to the general rules)
    built = types.GenerateContentResponseUsageMetadata.model_construct(**meta)
    r = types.GenerateContentResponse(usage_metadata=built, model_version="gemini-2.5-flash",
                                      response_id="r1")
    assert response_usage(r) == expected


_FIELDS = ("prompt_token_count", "cached_content_token_count", "tool_use_prompt_token_count",
           "candidates_token_count", "thoughts_token_count", "total_token_count")
_count_like = st.one_of(st.none(), st.integers(-5, 2**54), st.sampled_from([0, 2**53 - 1, 2**53]),
                        st.booleans(), st.floats(allow_nan=True), st.text(max_size=3))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.fixed_dictionaries({}, optional=dict.fromkeys(_FIELDS, _count_like)),
       st.sampled_from([None, "", "gemini-2.5-flash"]), st.sampled_from([None, "", "r1"]))
@example({"prompt_token_count": 2**52, "candidates_token_count": 2**52 - 1}, "m", "r")
@example({"prompt_token_count": 5, "cached_content_token_count": 9, "total_token_count": 0}, "m", "r")
def test_one_frame_reader_agrees_with_the_general_rules(meta: dict[str, Any], model: str | None,
                                                        rid: str | None) -> None:
    # the SDK's own type with whatever counts a lenient parser might leave in it
    r = types.GenerateContentResponse.model_construct(
        usage_metadata=types.GenerateContentResponseUsageMetadata.model_construct(**meta),
        model_version=model, response_id=rid)
    assert response_usage(r) == _general_usage(r)


def test_no_usage_metadata_on_the_sdk_type() -> None:
    assert response_usage(types.GenerateContentResponse()) is None


def test_stream_last_value_wins_field_by_field() -> None:
    chunks = [
        {"promptTokenCount": 6, "candidatesTokenCount": 3, "thoughtsTokenCount": 4, "totalTokenCount": 13},
        {"promptTokenCount": 6, "candidatesTokenCount": 7, "thoughtsTokenCount": 4, "totalTokenCount": 17},
        # a final chunk without candidatesTokenCount keeps the earlier value (not zero output)
        {"promptTokenCount": 6, "thoughtsTokenCount": 4, "totalTokenCount": 17},
    ]
    counts = None
    for meta in chunks:
        c = read_counts(meta)
        assert c is not None
        counts = merge_counts(counts, c)
    assert counts is not None
    u = build_usage(counts, "m", None)
    assert u is not None
    assert (u.input_tokens, u.output_tokens, u.total_tokens) == (6, 11, 17)  # not 3+7 (summed)


# -- the stream reducer's per-chunk path --------------------------------------------------------

_text = st.one_of(st.none(), st.sampled_from(["", "a", "héllo wörld", "x" * 300]))
_part = st.builds(types.Part, text=_text, thought=st.sampled_from([None, True]))
_content = st.one_of(st.none(), st.builds(types.Content, role=st.just("model"),
                                          parts=st.one_of(st.none(), st.lists(_part, max_size=3))))
_candidate = st.builds(types.Candidate, content=_content,
                       finish_reason=st.sampled_from([None, types.FinishReason.STOP, "MAX_TOKENS"]))
_meta = st.one_of(st.none(), st.builds(
    types.GenerateContentResponseUsageMetadata, prompt_token_count=st.integers(0, 50),
    candidates_token_count=st.one_of(st.none(), st.integers(0, 500)),
    thoughts_token_count=st.one_of(st.none(), st.integers(0, 50))))
_chunk = st.builds(types.GenerateContentResponse,
                   candidates=st.one_of(st.none(), st.lists(_candidate, max_size=2)),
                   usage_metadata=_meta, model_version=st.sampled_from([None, "", "gemini-a", "gemini-b"]),
                   response_id=st.sampled_from([None, "", "r1", "r2"]))


def _reduced(chunks: list[Any], general: bool) -> tuple[Any, ...]:
    from aerostack_meter.providers.gemini import GeminiReducer

    r = GeminiReducer("gemini", {"model": "asked-for"})
    r.slow = general  # the general readers (field by field), as for a chunk that is not the SDK's model
    for chunk in chunks:
        assert r.observe(chunk) is False
    return (r.chars, r.finished, r.model, r.response_id, r.last, r.prev, r.final(True), r.final(False))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_chunk, max_size=5))
def test_stream_chunk_path_agrees_with_the_general_readers(chunks: list[types.GenerateContentResponse]) -> None:
    # the SDK's own chunk models, of every shape a stream may send (no candidate, no content, no
    # parts, one part, several, text or none, a finish reason or none, usage or none)
    assert _reduced(chunks, general=False) == _reduced(chunks, general=True)


def test_stream_chunk_path_counts_every_part() -> None:
    from aerostack_meter.providers.gemini import GeminiReducer

    parts = [types.Part(text="abc"), types.Part(text="de", thought=True), types.Part()]
    r = GeminiReducer("gemini", {})
    r.observe(types.GenerateContentResponse(candidates=[types.Candidate(content=types.Content(parts=parts))]))
    r.observe(types.GenerateContentResponse(candidates=[types.Candidate(content=types.Content(parts=parts[:1]))]))
    assert (r.chars, r.slow) == (8, False)
