"""Usage that is missing or hostile is counted "usage missing" (logged once per model), never
billed; a call that raises is not metered and raises exactly what it raises without us."""

from __future__ import annotations

import logging
from typing import Any

import openai
import pytest

import aerostack_meter as am
from tests.conftest import billed

from ._openai_support import MODEL, USER, client, clients, drain, dump, quick_gc, resolve

__all__ = ["clients", "quick_gc"]  # fixtures

HOSTILE = ["null", "missing", "negative", "huge"]  # "string": see the test of its own below


async def _chat(c: Any, **kw: Any) -> Any:
    return await resolve(c.chat.completions.create(model=MODEL, messages=USER, **kw))


async def _chat_stream(c: Any, **kw: Any) -> Any:
    return await drain(await resolve(c.chat.completions.create(model=MODEL, messages=USER, stream=True, **kw)))


async def _responses(c: Any, **kw: Any) -> Any:
    return await resolve(c.responses.create(model=MODEL, input="hello there", **kw))


async def _responses_stream(c: Any, **kw: Any) -> Any:
    return await drain(await resolve(c.responses.create(model=MODEL, input="hello there", stream=True, **kw)))


async def _completions_stream(c: Any, **kw: Any) -> Any:
    return await drain(await resolve(c.completions.create(model=MODEL, prompt="once upon", stream=True, **kw)))


async def _embeddings(c: Any, **kw: Any) -> Any:
    return await resolve(c.embeddings.create(model="emb-mock", input="one two", **kw))


CALLS = {"chat": _chat, "chat-stream": _chat_stream, "responses": _responses,
         "responses-stream": _responses_stream, "completions-stream": _completions_stream,
         "embeddings": _embeddings}


@pytest.mark.parametrize("call", list(CALLS))
@pytest.mark.parametrize("usage", HOSTILE)
async def test_missing_or_hostile_usage_is_never_billed(usage: str, call: str, mock_llm: Any, gateway: Any,
                                                        meter: Any) -> None:
    c = client(mock_llm, "async" if call.endswith("stream") else "sync")
    if call.startswith("responses") and not hasattr(c, "responses"):
        pytest.skip(f"openai {openai.__version__} has no responses")
    headers = {"x-mock-usage": usage}
    got = await CALLS[call](c, extra_headers=headers)
    assert billed(gateway) == {}
    stats = am.stats()
    assert (stats.calls_metered, stats.usage_missing, stats.internal_errors) == (0, 1, 0)
    if call == "chat-stream":
        assert all(chunk.choices for chunk in got)  # the injected final chunk is hidden all the same
    am.uninstrument()
    assert dump(got) == dump(await CALLS[call](client(mock_llm, "sync" if call.endswith("stream") else "async"),
                                               extra_headers=headers))


@pytest.mark.parametrize("call", ["chat", "responses", "embeddings"])
async def test_numeric_strings_are_numbers_to_the_sdk(call: str, mock_llm: Any, gateway: Any, meter: Any) -> None:
    """Where the SDK turns ``"14"`` into ``14`` (chat, responses) the user sees numbers and is billed
    them; where it hands the strings on (embeddings), they are not counts: usage missing."""
    c = client(mock_llm, "sync")
    if call == "responses" and not hasattr(c, "responses"):
        pytest.skip(f"openai {openai.__version__} has no responses")
    got = await CALLS[call](c, extra_headers={"x-mock-usage": "string"})
    shown = got.usage.total_tokens
    if call == "embeddings":
        assert shown == str(got.usage.prompt_tokens)
        assert billed(gateway) == {} and am.stats().usage_missing == 1
    else:
        assert type(shown) is int and shown > 0
        assert billed(gateway) == {"default": shown}


def test_usage_missing_is_logged_once_per_model(mock_llm: Any, meter: Any,
                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="aerostack_meter")
    c = client(mock_llm, "sync")
    for model in ("m-one", "m-one", "m-two"):
        c.chat.completions.create(model=model, messages=USER, extra_headers={"x-mock-usage": "null"})
    warnings = [r.getMessage() for r in caplog.records if "no usage" in r.getMessage()]
    assert len(warnings) == 2 and "m-one" in warnings[0] and "m-two" in warnings[1]
    assert am.stats().usage_missing == 3


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("call", ["chat", "chat-stream", "responses-stream", "embeddings"])
@pytest.mark.parametrize("status", [429, 500])
async def test_failed_call_is_not_metered_and_raises_the_same(status: int, call: str, mode: str, mock_llm: Any,
                                                              gateway: Any, meter: Any) -> None:
    c = client(mock_llm, mode)
    if call.startswith("responses") and not hasattr(c, "responses"):
        pytest.skip(f"openai {openai.__version__} has no responses")
    headers = {"x-mock-error": str(status)}
    with pytest.raises(openai.APIStatusError) as metered:
        await CALLS[call](c, extra_headers=headers)
    assert billed(gateway) == {}
    stats = am.stats()
    assert (stats.calls_metered, stats.usage_missing, stats.events_estimated) == (0, 0, 0)
    am.uninstrument()
    with pytest.raises(openai.APIStatusError) as bare:
        await CALLS[call](client(mock_llm, mode), extra_headers=headers)
    assert type(metered.value) is type(bare.value) and metered.value.status_code == status
    assert str(metered.value) == str(bare.value) and metered.value.body == bare.value.body


async def test_unbillable_call_is_stopped_before_the_request(mock_llm: Any, meter_factory: Any) -> None:
    meter_factory(on_missing_consumer="raise")  # no default consumer, no scope
    before = mock_llm.stats()["requests"]
    with pytest.raises(am.MissingConsumerError):
        await _chat(client(mock_llm, "sync"))
    assert mock_llm.stats()["requests"] == before


@pytest.mark.parametrize("call", ["chat", "chat-stream", "responses", "responses-stream"])
async def test_normalised_record_keeps_cache_and_reasoning(call: str, mock_llm: Any, gateway: Any,
                                                           meter_factory: Any) -> None:
    seen: list[am.Usage] = []

    def policy(usage: am.Usage) -> dict[str, int]:
        seen.append(usage)
        return {"tokens": usage.total_tokens}

    meter_factory(default_consumer_id="default", metrics=policy)
    c = client(mock_llm, "sync")
    if call.startswith("responses") and not hasattr(c, "responses"):
        pytest.skip(f"openai {openai.__version__} has no responses")
    headers = {"x-mock-cache": "3", "x-mock-cache-write": "2", "x-mock-reasoning": "4"}
    await CALLS[call](c, extra_headers=headers)
    assert am.flush(5)
    [u] = seen
    assert (u.provider, u.model, u.cached_input_tokens, u.reasoning_tokens, u.estimated) == (
        "openai", MODEL, 3, 4, False)
    assert u.output_tokens == 10 + 4 and u.total_tokens == u.input_tokens + u.output_tokens
    # the chat wire shape has no cache writes (the mock sends none there); responses does (2.x+)
    assert u.cache_write_tokens == (2 if call.startswith("responses") else 0)
    assert u.response_id and u.response_id.startswith(("chatcmpl-", "resp_"))


@pytest.mark.parametrize(("wire", "expected"), [
    ({"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}, (5, 2, 7)),
    ({"prompt_tokens": 5, "completion_tokens": 2}, (5, 2, 7)),  # no total: the sum
    ({"prompt_tokens": 5, "total_tokens": 5}, (5, 0, 5)),  # embeddings: input only
    ({"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7,
      "prompt_tokens_details": {"cached_tokens": "x"}}, (5, 2, 7)),  # a bad detail counts as 0
    ({"prompt_tokens": -1, "completion_tokens": 2}, None),
    ({"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 2**70}, None),
    ({"prompt_tokens": "5", "completion_tokens": 2}, None),
    ({"prompt_tokens": True, "completion_tokens": 2}, None),
    ({}, None),
    ("garbage", None),
])
def test_chat_usage_from_the_wire(wire: Any, expected: Any) -> None:
    from aerostack_meter.providers.openai import chat_usage

    u = chat_usage(wire, "m", "id")
    assert (None if u is None else (u.input_tokens, u.output_tokens, u.total_tokens)) == expected
