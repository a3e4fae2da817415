"""The mock's Mistral chat endpoint, parsed by the real `mistralai` SDK."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from aerostack_meter.servers import MockLLMHandle

try:  # 2.x and later
    from mistralai.client import Mistral
except ImportError:  # pragma: no cover - 1.x
    from mistralai import Mistral  # type: ignore[attr-defined,no-redef]

MESSAGES: Any = [{"role": "user", "content": "hello big world"}]  # P = 6


@pytest.fixture
async def client(llm: MockLLMHandle) -> AsyncIterator[Any]:
    c = Mistral(api_key="k", server_url=llm.base_url)
    yield c
    await c.__aexit__(None, None, None)  # closes its async HTTP client (unclosed, it warns)
    c.__exit__(None, None, None)


def test_complete_json(client: Any, llm: MockLLMHandle) -> None:
    r = client.chat.complete(model="mistral-small-latest", messages=MESSAGES,
                             http_headers={"x-mock-cache": "2"})
    assert r.choices[0].message.content == "hello big world hello big world hello big world hello"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (6, 10, 16)
    assert r.usage.model_extra["prompt_tokens_details"] == {"cached_tokens": 2}
    stats = llm.stats()
    assert stats["by_endpoint"] == {"mistral.chat": 1}  # not the OpenAI endpoint on the same path
    assert stats["usage"]["total"]["cached_input_tokens"] == 2


def test_stream_usage_on_last_event(client: Any, llm: MockLLMHandle) -> None:
    events = list(client.chat.stream(model="mistral-small-latest", messages=MESSAGES,
                                     http_headers={"x-mock-chunks": "3"}))
    assert [e.data.usage is not None for e in events] == [False, False, False, False, True]
    assert events[-1].data.choices[0].finish_reason == "stop"
    assert events[-1].data.usage.total_tokens == 16
    assert llm.usage()["by_endpoint"]["mistral.chat"]["total_tokens"] == 16


async def test_async_twins(client: Any) -> None:
    r = await client.chat.complete_async(model="m", messages=MESSAGES, max_tokens=3)
    assert r.usage.completion_tokens == 3 and r.choices[0].finish_reason == "length"
    last = None
    async for event in await client.chat.stream_async(model="m", messages=MESSAGES):
        last = event
    assert last is not None and last.data.usage.total_tokens == 16


def test_openai_clients_still_get_openai_shapes(llm: MockLLMHandle, http: httpx.Client) -> None:
    body = {"model": "m", "messages": MESSAGES, "stream": True}
    r = http.post(llm.url + "/chat/completions", json=body)
    assert '"usage"' not in r.text  # OpenAI streams have usage only with include_usage
    r = http.post(llm.url + "/chat/completions", json=body,
                  headers={"user-agent": "mistral-client-python/3.7.0"})
    assert '"usage":{"prompt_tokens":6' in r.text


def test_error_status(client: Any, llm: MockLLMHandle) -> None:
    with pytest.raises(Exception) as info:
        client.chat.complete(model="m", messages=MESSAGES, http_headers={"x-mock-error": "429"})
    assert getattr(info.value, "status_code", None) == 429
    assert llm.usage()["total"]["requests"] == 0
