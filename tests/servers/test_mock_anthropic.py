"""The mock's Anthropic endpoints, parsed by the real `anthropic` SDK."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import anthropic
import httpx
import pytest

from aerostack_meter.servers import MockLLMHandle

MESSAGES = [{"role": "user", "content": "hi you there"}]
# 3 words + 3 per message; with system "be nice": + 2
PROMPT = 6


@pytest.fixture
def client(llm: MockLLMHandle) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=llm.anthropic_base_url, api_key="x", max_retries=0) as c:
        yield c


@pytest.fixture
async def aclient(llm: MockLLMHandle) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(
        base_url=llm.anthropic_base_url, api_key="x", max_retries=0
    ) as c:
        yield c


def test_messages_json(client: anthropic.Anthropic, llm: MockLLMHandle) -> None:
    m = client.messages.create(
        model="claude-test",
        max_tokens=100,
        system="be nice",
        messages=MESSAGES,  # type: ignore[arg-type]
        metadata={"user_id": "usr_a"},
    )
    assert m.type == "message" and m.role == "assistant"
    assert m.model == "claude-test"
    assert m.content[0].type == "text"
    assert m.content[0].text == "hi you there hi you there hi you there hi"
    assert m.stop_reason == "end_turn"
    assert m.usage.input_tokens == PROMPT + 2
    assert m.usage.output_tokens == 10
    assert m.usage.cache_read_input_tokens == 0
    assert m.usage.cache_creation_input_tokens == 0
    assert m.usage.service_tier == "standard"
    assert llm.usage()["by_consumer"]["usr_a"]["total_tokens"] == 18


def test_messages_max_tokens_caps(client: anthropic.Anthropic) -> None:
    m = client.messages.create(model="c", max_tokens=3, messages=MESSAGES)  # type: ignore[arg-type]
    assert m.stop_reason == "max_tokens"
    assert m.usage.output_tokens == 3


def test_messages_stream_raw_events(llm: MockLLMHandle, http: httpx.Client) -> None:
    body = {"model": "c", "max_tokens": 100, "messages": MESSAGES, "stream": True}
    events = _events(http.post(f"{llm.anthropic_base_url}/v1/messages", json=body))
    names = [name for name, _ in events]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert names.count("content_block_delta") == 10
    start = events[0][1]["message"]["usage"]
    assert start["input_tokens"] == PROMPT
    assert start["output_tokens"] == 1
    delta = events[-2][1]
    assert delta["usage"] == {
        "input_tokens": PROMPT,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": 10,
    }
    assert delta["delta"]["stop_reason"] == "end_turn"
    assert llm.usage()["total"]["output_tokens"] == 10


def test_messages_stream_sdk_and_helper(client: anthropic.Anthropic) -> None:
    events = list(client.messages.create(model="c", max_tokens=100, messages=MESSAGES, stream=True))  # type: ignore[arg-type]
    assert events[0].type == "message_start"
    assert events[-1].type == "message_stop"
    with client.messages.stream(model="c", max_tokens=100, messages=MESSAGES) as stream:  # type: ignore[arg-type]
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == final.content[0].text  # type: ignore[union-attr]
    assert final.usage.output_tokens == 10
    assert final.usage.input_tokens == PROMPT


async def test_messages_async(aclient: anthropic.AsyncAnthropic) -> None:
    m = await aclient.messages.create(model="c", max_tokens=5, messages=MESSAGES)  # type: ignore[arg-type]
    assert m.usage.output_tokens == 5
    async with aclient.messages.stream(model="c", max_tokens=100, messages=MESSAGES) as stream:  # type: ignore[arg-type]
        final = await stream.get_final_message()
    assert final.usage.output_tokens == 10
    stream2 = await aclient.messages.create(
        model="c", max_tokens=100, messages=MESSAGES, stream=True
    )  # type: ignore[arg-type]
    types = [e.type async for e in stream2]
    assert types[-1] == "message_stop"


def test_count_tokens_not_billed(client: anthropic.Anthropic, llm: MockLLMHandle) -> None:
    r = client.messages.count_tokens(model="c", system="one two", messages=MESSAGES)  # type: ignore[arg-type]
    assert r.input_tokens == PROMPT + 2
    assert llm.usage()["total"]["requests"] == 0


def test_beta_messages(client: anthropic.Anthropic, llm: MockLLMHandle, http: httpx.Client) -> None:
    m = client.beta.messages.create(model="c", max_tokens=4, messages=MESSAGES)  # type: ignore[arg-type]
    assert m.usage.output_tokens == 4
    with client.beta.messages.stream(model="c", max_tokens=100, messages=MESSAGES) as stream:  # type: ignore[arg-type]
        assert stream.get_final_message().usage.output_tokens == 10
    assert client.beta.messages.count_tokens(model="c", messages=MESSAGES).input_tokens == PROMPT  # type: ignore[arg-type]
    r = http.post(
        f"{llm.anthropic_base_url}/v1/messages?beta=true",
        json={"model": "c", "max_tokens": 2, "messages": MESSAGES},
    )
    assert r.json()["usage"]["output_tokens"] == 2
    assert llm.usage()["by_endpoint"]["anthropic.messages"]["requests"] == 3


def test_content_blocks_and_tool_results_counted(client: anthropic.Anthropic) -> None:
    m = client.messages.create(
        model="c",
        max_tokens=100,
        system=[{"type": "text", "text": "sys one"}],
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "a b"}]},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "c d e"}],
            },
        ],
    )
    assert m.usage.input_tokens == 2 + (2 + 3) + (0 + 3) + (3 + 3)


def _events(response: httpx.Response) -> list[tuple[str, dict[str, object]]]:
    assert response.status_code == 200
    out = []
    for block in response.text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((lines["event"], json.loads(lines["data"])))
    return out
