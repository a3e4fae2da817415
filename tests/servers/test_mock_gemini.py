"""The mock's Gemini endpoints (Gemini API and Vertex AI), parsed by the real `google-genai` SDK."""

from __future__ import annotations

import httpx
import pytest
from google import genai
from google.genai import errors, types
from google.oauth2.credentials import Credentials

from aerostack_meter.servers import MockLLMHandle

MODEL = "gemini-2.5-flash"
TEXT = "hello big world"  # P = 3 words + 3 for the content = 6


def _client(llm: MockLLMHandle, **headers: str) -> genai.Client:
    options = types.HttpOptions(base_url=llm.base_url, headers=headers or None)
    return genai.Client(api_key="k", http_options=options)


def _vertex(llm: MockLLMHandle, express: bool) -> genai.Client:
    options = types.HttpOptions(base_url=llm.base_url)
    if express:  # Vertex AI express mode: an API key, no project path
        return genai.Client(vertexai=True, api_key="k", http_options=options)
    return genai.Client(vertexai=True, project="p", location="us-central1",
                        credentials=Credentials(token="t"), http_options=options)  # type: ignore[no-untyped-call]


def _cfg(**headers: str) -> types.GenerateContentConfig:
    return types.GenerateContentConfig(http_options=types.HttpOptions(headers=headers))


def test_generate_content_json(llm: MockLLMHandle) -> None:
    client = _client(llm)  # kept: a collected Client closes its HTTP client
    r = client.models.generate_content(model=MODEL, contents=TEXT)
    assert r.text == "hello big world hello big world hello big world hello"
    u = r.usage_metadata
    assert u is not None
    assert (u.prompt_token_count, u.candidates_token_count, u.total_token_count) == (6, 10, 16)
    assert u.thoughts_token_count is None and u.cached_content_token_count is None
    assert r.candidates and r.candidates[0].finish_reason == types.FinishReason.STOP
    assert r.model_version == MODEL
    assert llm.usage()["by_endpoint"]["gemini.generate_content"]["total_tokens"] == 16


def test_usage_parts_thoughts_cache_and_tool_use(llm: MockLLMHandle) -> None:
    client = _client(llm, **{"x-mock-reasoning": "4", "x-mock-cache": "2", "x-mock-tool-use-prompt": "5",
                             "x-mock-cache-write": "3"})
    u = client.models.generate_content(model=MODEL, contents=TEXT).usage_metadata
    assert u is not None
    # promptTokenCount includes the cached part; thoughts and tool-use prompt are reported apart
    assert u.prompt_token_count == 6 and u.cached_content_token_count == 2
    assert u.candidates_token_count == 10 and u.thoughts_token_count == 4
    assert u.tool_use_prompt_token_count == 5
    assert u.total_token_count == 6 + 5 + 10 + 4
    tally = llm.usage()["total"]
    assert tally["input_tokens"] == 11 and tally["output_tokens"] == 14
    assert tally["cache_write_tokens"] == 0  # Gemini has no cache writes


def test_max_output_tokens_caps(llm: MockLLMHandle) -> None:
    client = _client(llm)
    r = client.models.generate_content(
        model=MODEL, contents=TEXT, config=types.GenerateContentConfig(max_output_tokens=3))
    assert r.usage_metadata and r.usage_metadata.candidates_token_count == 3
    assert r.candidates and r.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS


def test_system_instruction_counts(llm: MockLLMHandle) -> None:
    client = _client(llm)
    r = client.models.generate_content(
        model=MODEL, contents=TEXT, config=types.GenerateContentConfig(system_instruction="be nice"))
    assert r.usage_metadata and r.usage_metadata.prompt_token_count == 8


def test_stream_usage_is_cumulative(llm: MockLLMHandle) -> None:
    client = _client(llm)
    chunks = list(client.models.generate_content_stream(
        model=MODEL, contents=TEXT, config=_cfg(**{"x-mock-chunks": "2", "x-mock-reasoning": "4"})))
    assert "".join(c.text or "" for c in chunks) == "hello big world hello big world hello big world hello"
    counts = [c.usage_metadata.candidates_token_count for c in chunks if c.usage_metadata]
    assert counts == [5, 10, 10]  # running totals: summing them would bill 25
    last = chunks[-1]
    assert last.usage_metadata and last.usage_metadata.total_token_count == 20
    assert last.candidates and last.candidates[0].finish_reason == types.FinishReason.STOP
    assert llm.usage()["total"]["total_tokens"] == 20


async def test_async_json_and_stream(llm: MockLLMHandle) -> None:
    client = _client(llm)
    r = await client.aio.models.generate_content(model=MODEL, contents=TEXT)
    assert r.usage_metadata and r.usage_metadata.total_token_count == 16
    last = None
    async for chunk in await client.aio.models.generate_content_stream(model=MODEL, contents=TEXT):
        last = chunk
    assert last is not None and last.usage_metadata and last.usage_metadata.total_token_count == 16
    assert llm.usage()["total"]["requests"] == 2


@pytest.mark.parametrize("express", [False, True], ids=["project", "express"])
def test_vertex_paths(llm: MockLLMHandle, express: bool) -> None:
    client = _vertex(llm, express)
    r = client.models.generate_content(model=MODEL, contents=TEXT)
    assert r.usage_metadata and r.usage_metadata.total_token_count == 16
    chunks = list(client.models.generate_content_stream(model=MODEL, contents=TEXT))
    assert chunks[-1].usage_metadata and chunks[-1].usage_metadata.total_token_count == 16
    assert llm.stats()["by_endpoint"] == {"gemini.generate_content": 2}


def test_vertex_wire_path(llm: MockLLMHandle, http: httpx.Client) -> None:
    path = "/v1beta1/projects/p/locations/us-central1/publishers/google/models/m:generateContent"
    body = {"contents": [{"role": "user", "parts": [{"text": TEXT}]}]}
    r = http.post(llm.base_url + path, json=body)
    assert r.status_code == 200 and r.json()["usageMetadata"]["totalTokenCount"] == 16


def test_count_tokens_is_not_usage(llm: MockLLMHandle) -> None:
    client = _client(llm)
    r = client.models.count_tokens(model=MODEL, contents=TEXT)
    assert r.total_tokens == 6
    assert llm.usage()["total"]["requests"] == 0


def test_error_status(llm: MockLLMHandle) -> None:
    client = _client(llm, **{"x-mock-error": "429"})
    with pytest.raises(errors.ClientError) as info:
        client.models.generate_content(model=MODEL, contents=TEXT)
    assert info.value.code == 429 and info.value.status == "RESOURCE_EXHAUSTED"
    assert llm.usage()["total"]["requests"] == 0


def test_stream_error_event_raises(llm: MockLLMHandle) -> None:
    client = _client(llm, **{"x-mock-stream-error-event": "1"})
    stream = client.models.generate_content_stream(model=MODEL, contents=TEXT)
    with pytest.raises(errors.ServerError):
        list(stream)
    assert llm.usage()["total"]["requests"] == 0


@pytest.mark.parametrize("mode", ["null", "missing", "string"])
def test_hostile_usage_modes(llm: MockLLMHandle, http: httpx.Client, mode: str) -> None:
    body = {"contents": [{"parts": [{"text": TEXT}]}]}
    r = http.post(f"{llm.base_url}/v1beta/models/{MODEL}:generateContent", json=body,
                  headers={"x-mock-usage": mode})
    data = r.json()
    if mode == "null":
        assert data["usageMetadata"] is None
    elif mode == "missing":
        assert "usageMetadata" not in data
    else:
        assert data["usageMetadata"]["totalTokenCount"] == "16"


def test_function_declarations_get_a_function_call(llm: MockLLMHandle, http: httpx.Client) -> None:
    tools = [{"functionDeclarations": [{"name": "get_weather"}]}]
    ask = {"role": "user", "parts": [{"text": TEXT}]}
    url = f"{llm.base_url}/v1beta/models/{MODEL}:generateContent"
    first = http.post(url, json={"contents": [ask], "tools": tools}).json()
    assert first["candidates"][0]["content"]["parts"] == [{"functionCall": {"name": "get_weather", "args": {}}}]
    assert first["usageMetadata"]["candidatesTokenCount"] == 3
    answer = {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"r": "sunny"}}}]}
    call = {"role": "model", "parts": first["candidates"][0]["content"]["parts"]}
    second = http.post(url, json={"contents": [ask, call, answer], "tools": tools}).json()
    assert second["candidates"][0]["content"]["parts"][0]["text"].startswith("hello big world")
