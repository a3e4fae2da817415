"""The mock's OpenAI endpoints, parsed by the real `openai` SDK (sync and async, JSON and SSE)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import httpx
import openai
import pytest

from aerostack_meter.servers import MockLLMHandle

# "hello big world" = 3 words + 3 per message; the reply cycles the last user text to 10 words
MESSAGES = [{"role": "user", "content": "hello big world"}]
PROMPT = 6
REPLY = "hello big world hello big world hello big world hello"


@pytest.fixture
def client(llm: MockLLMHandle) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=llm.url, api_key="x", max_retries=0) as c:
        yield c


@pytest.fixture
async def aclient(llm: MockLLMHandle) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=llm.url, api_key="x", max_retries=0) as c:
        yield c


def test_chat_json(client: openai.OpenAI, llm: MockLLMHandle) -> None:
    r = client.chat.completions.create(model="gpt-test", messages=MESSAGES, user="usr_1")  # type: ignore[arg-type]
    assert r.object == "chat.completion"
    assert r.model == "gpt-test"
    assert r.choices[0].message.content == REPLY
    assert r.choices[0].finish_reason == "stop"
    assert r.usage is not None
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (
        PROMPT,
        10,
        16,
    )
    assert (
        r.usage.prompt_tokens_details is not None
        and r.usage.prompt_tokens_details.cached_tokens == 0
    )
    assert llm.usage()["by_consumer"]["usr_1"]["total_tokens"] == 16


def test_chat_counts_system_and_parts(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(
        model="m",
        messages=[
            {"role": "system", "content": "be brief"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "one two"}, {"type": "text", "text": "three"}],
            },
        ],
        max_completion_tokens=4,
    )
    assert r.usage is not None
    assert r.usage.prompt_tokens == 2 + 3 + 3 + 3
    assert r.usage.completion_tokens == 4
    assert r.choices[0].finish_reason == "length"
    assert r.choices[0].message.content == "one two three one"


def test_chat_max_tokens_legacy_param_caps(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=2)  # type: ignore[arg-type]
    assert r.usage is not None and r.usage.completion_tokens == 2


def test_chat_stream_without_include_usage_has_no_usage_key(
    llm: MockLLMHandle, http: httpx.Client
) -> None:
    body = {"model": "m", "messages": MESSAGES, "stream": True}
    chunks = _sse_json(http.post(f"{llm.url}/chat/completions", json=body))
    assert chunks[-1] == "[DONE]"
    data = [c for c in chunks if isinstance(c, dict)]
    assert all("usage" not in c for c in data)
    assert data[-1]["choices"][0]["finish_reason"] == "stop"
    assert llm.usage()["total"]["requests"] == 0  # no usage was sent


def test_chat_stream_include_usage_final_chunk(llm: MockLLMHandle, http: httpx.Client) -> None:
    body = {
        "model": "m",
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    chunks = [
        c
        for c in _sse_json(http.post(f"{llm.url}/chat/completions", json=body))
        if isinstance(c, dict)
    ]
    *content, last = chunks
    assert all(c["usage"] is None for c in content)
    assert last["choices"] == []
    assert last["usage"]["prompt_tokens"] == PROMPT
    assert last["usage"]["completion_tokens"] == 10
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in content) == REPLY
    assert llm.usage()["total"]["total_tokens"] == 16


def test_chat_stream_sdk(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="m",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},  # type: ignore[arg-type]
    )
    chunks = list(stream)
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 16
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY


def test_chat_stream_helper(client: openai.OpenAI) -> None:
    with client.chat.completions.stream(
        model="m",
        messages=MESSAGES,
        stream_options={"include_usage": True},  # type: ignore[arg-type]
    ) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == REPLY
    assert final.usage is not None and final.usage.completion_tokens == 10


async def test_chat_async_json_stream_and_helper(aclient: openai.AsyncOpenAI) -> None:
    r = await aclient.chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
    assert r.usage is not None and r.usage.total_tokens == 16
    stream = await aclient.chat.completions.create(
        model="m",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},  # type: ignore[arg-type]
    )
    chunks = [c async for c in stream]
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == PROMPT
    async with aclient.chat.completions.stream(model="m", messages=MESSAGES) as s:  # type: ignore[arg-type]
        final = await s.get_final_completion()
    assert final.choices[0].message.content == REPLY
    assert final.usage is None  # no include_usage: no usage, as the real API


def test_responses_json(client: openai.OpenAI, llm: MockLLMHandle) -> None:
    r = client.responses.create(model="m", input="what is up", instructions="be nice", user="usr_r")
    assert r.status == "completed"
    assert r.output_text == "what is up what is up what is up what"
    assert r.usage is not None
    assert r.usage.input_tokens == 2 + 3 + 3
    assert r.usage.output_tokens == 10
    assert r.usage.total_tokens == 18
    assert r.usage.input_tokens_details.cached_tokens == 0
    assert r.usage.output_tokens_details.reasoning_tokens == 0
    assert llm.usage()["by_consumer"]["usr_r"]["input_tokens"] == 8


def test_responses_input_items_and_cap(client: openai.OpenAI) -> None:
    r = client.responses.create(
        model="m",
        input=[
            {"role": "user", "content": [{"type": "input_text", "text": "alpha beta"}]},
            {"role": "assistant", "content": "gamma"},
            {"role": "user", "content": "delta"},
        ],
        max_output_tokens=3,
    )
    assert r.usage is not None
    assert r.usage.input_tokens == 4 + 9
    assert r.usage.output_tokens == 3
    assert r.output_text == "delta delta delta"


def test_responses_stream_events(client: openai.OpenAI, llm: MockLLMHandle) -> None:
    events = list(client.responses.create(model="m", input="a b", stream=True))
    types = [e.type for e in events]
    assert types[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert types.count("response.output_text.delta") == 10
    assert [e.sequence_number for e in events] == list(range(len(events)))
    completed = events[-1]
    assert completed.type == "response.completed"
    assert completed.response.usage is not None and completed.response.usage.output_tokens == 10
    assert llm.usage()["by_endpoint"]["openai.responses"]["requests"] == 1


def test_responses_stream_helper(client: openai.OpenAI) -> None:
    with client.responses.stream(model="m", input="a b") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == "a b a b a b a b a b"
    assert final.usage is not None and final.usage.total_tokens == 5 + 10


async def test_responses_async(aclient: openai.AsyncOpenAI) -> None:
    r = await aclient.responses.create(model="m", input="x")
    assert r.usage is not None and r.usage.input_tokens == 4
    async with aclient.responses.stream(model="m", input="x") as stream:
        final = await stream.get_final_response()
    assert final.usage is not None and final.usage.output_tokens == 10


def test_completions_json_and_stream(client: openai.OpenAI, llm: MockLLMHandle) -> None:
    r = client.completions.create(model="m", prompt="one two three", max_tokens=4)
    assert r.choices[0].text == "one two three one"
    assert r.choices[0].finish_reason == "length"
    assert r.usage is not None and (r.usage.prompt_tokens, r.usage.completion_tokens) == (3, 4)
    chunks = list(
        client.completions.create(
            model="m", prompt=["a b", "c"], stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 3
    assert all(c.usage is None for c in chunks[:-1])
    plain = list(client.completions.create(model="m", prompt="a", stream=True))
    assert all(c.usage is None for c in plain)
    assert llm.usage()["by_endpoint"]["openai.completions"]["requests"] == 2


async def test_completions_async(aclient: openai.AsyncOpenAI) -> None:
    r = await aclient.completions.create(model="m", prompt=[1, 2, 3, 4])
    assert r.usage is not None and r.usage.prompt_tokens == 4


def test_embeddings_default_base64_decoded_by_sdk(
    client: openai.OpenAI, llm: MockLLMHandle, http: httpx.Client
) -> None:
    r = client.embeddings.create(model="m", input=["a b c", "d"], dimensions=4)
    assert len(r.data) == 2
    assert all(isinstance(x, float) for x in r.data[0].embedding)
    assert len(r.data[0].embedding) == 4
    assert (r.usage.prompt_tokens, r.usage.total_tokens) == (4, 4)
    as_float = client.embeddings.create(
        model="m", input=["a b c", "d"], dimensions=4, encoding_format="float"
    )
    assert as_float.data[0].embedding == pytest.approx(r.data[0].embedding, abs=1e-6)
    raw = http.post(
        f"{llm.url}/embeddings", json={"model": "m", "input": "x", "encoding_format": "base64"}
    ).json()
    assert isinstance(raw["data"][0]["embedding"], str)
    assert llm.usage()["by_endpoint"]["openai.embeddings"] == {
        "requests": 3,
        "input_tokens": 9,
        "cached_input_tokens": 0,
        "cache_write_tokens": 0,
        "output_tokens": 0,
        "reasoning_tokens": 0,
        "total_tokens": 9,
    }


async def test_embeddings_async(aclient: openai.AsyncOpenAI) -> None:
    r = await aclient.embeddings.create(model="m", input="one two")
    assert r.usage.prompt_tokens == 2


def test_unknown_endpoint_is_openai_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.models.list()


def _sse_json(response: httpx.Response) -> list[object]:
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    out: list[object] = []
    for line in response.text.splitlines():
        if line.startswith("data: "):
            payload = line[len("data: ") :]
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out
