"""The mock's Bedrock runtime endpoints, parsed by real `boto3` (and `anthropic.AnthropicBedrock`),
with the AWS event-stream framing checked by botocore's own decoder."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer
from botocore.exceptions import ClientError, EventStreamError

from aerostack_meter.servers import MockLLMHandle
from aerostack_meter.servers import _eventstream as es

MESSAGES = [{"role": "user", "content": [{"text": "hello big world"}]}]  # P = 6
CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
CLAUDE_BODY = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 100,
               "messages": [{"role": "user", "content": "hello big world"}]}


def make_client(llm: MockLLMHandle, **headers: str) -> Any:
    client = boto3.client(
        "bedrock-runtime", endpoint_url=llm.base_url, region_name="us-east-1",
        aws_access_key_id="AKIDTEST", aws_secret_access_key="secret",
        config=Config(retries={"max_attempts": 1}),
    )

    def add_headers(request: Any, **_: Any) -> None:
        for name, value in headers.items():
            request.headers[name] = value

    client.meta.events.register("before-sign.bedrock-runtime.*", add_headers)
    return client


@pytest.fixture
def client(llm: MockLLMHandle) -> Iterator[Any]:
    c = make_client(llm)
    yield c
    c.close()


def test_converse_json(client: Any, llm: MockLLMHandle) -> None:
    r = client.converse(modelId=CLAUDE, messages=MESSAGES, system=[{"text": "be nice"}],
                        requestMetadata={"user_id": "usr_b"})
    assert r["output"]["message"]["content"][0]["text"].startswith("hello big world hello")
    assert r["stopReason"] == "end_turn"
    assert r["usage"] == {"inputTokens": 8, "outputTokens": 10, "totalTokens": 18,
                          "cacheReadInputTokens": 0, "cacheWriteInputTokens": 0}
    assert llm.usage()["by_consumer"]["usr_b"]["total_tokens"] == 18


def test_converse_cache_parts(llm: MockLLMHandle) -> None:
    client = make_client(llm, **{"x-mock-cache": "2", "x-mock-cache-write": "3"})
    usage = client.converse(modelId=CLAUDE, messages=MESSAGES,
                            inferenceConfig={"maxTokens": 4})["usage"]
    # inputTokens excludes the cache parts; totalTokens includes them
    assert usage == {"inputTokens": 1, "outputTokens": 4, "totalTokens": 10,
                     "cacheReadInputTokens": 2, "cacheWriteInputTokens": 3}


def test_converse_stream_events(client: Any, llm: MockLLMHandle) -> None:
    r = client.converse_stream(modelId=CLAUDE, messages=MESSAGES)
    events = list(r["stream"])
    assert list(events[0]) == ["messageStart"] and list(events[-1]) == ["metadata"]
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
    assert text == "hello big world hello big world hello big world hello"
    assert events[-2] == {"messageStop": {"stopReason": "end_turn"}}
    assert events[-1]["metadata"]["usage"]["totalTokens"] == 16
    assert llm.usage()["by_endpoint"]["bedrock.converse"]["total_tokens"] == 16


def test_invoke_anthropic_body_and_headers(client: Any, llm: MockLLMHandle) -> None:
    r = client.invoke_model(modelId=CLAUDE, body=json.dumps(CLAUDE_BODY))
    headers = r["ResponseMetadata"]["HTTPHeaders"]
    assert headers["x-amzn-bedrock-input-token-count"] == "6"
    assert headers["x-amzn-bedrock-output-token-count"] == "10"
    body = json.loads(r["body"].read())
    assert body["type"] == "message" and body["model"] == CLAUDE
    assert body["usage"]["input_tokens"] == 6 and body["usage"]["output_tokens"] == 10


def test_invoke_cache_headers(llm: MockLLMHandle) -> None:
    client = make_client(llm, **{"x-mock-cache": "2"})
    headers = client.invoke_model(modelId=CLAUDE, body=json.dumps(CLAUDE_BODY))["ResponseMetadata"]["HTTPHeaders"]
    assert headers["x-amzn-bedrock-input-token-count"] == "4"
    assert headers["x-amzn-bedrock-cache-read-input-token-count"] == "2"
    assert "x-amzn-bedrock-cache-write-input-token-count" not in headers


def test_invoke_stream_anthropic_metrics_in_last_chunk(client: Any, llm: MockLLMHandle) -> None:
    r = client.invoke_model_with_response_stream(modelId=CLAUDE, body=json.dumps(CLAUDE_BODY))
    chunks = [json.loads(e["chunk"]["bytes"]) for e in r["body"]]
    assert [c["type"] for c in chunks][:2] == ["message_start", "ping"]
    assert chunks[-1]["type"] == "message_stop"
    assert chunks[-1]["amazon-bedrock-invocationMetrics"]["inputTokenCount"] == 6
    assert chunks[-1]["amazon-bedrock-invocationMetrics"]["outputTokenCount"] == 10
    assert all("amazon-bedrock-invocationMetrics" not in c for c in chunks[:-1])
    assert llm.usage()["by_endpoint"]["bedrock.invoke"]["total_tokens"] == 16


def test_invoke_generic_body(client: Any) -> None:
    r = client.invoke_model(modelId="meta.llama3-8b-instruct-v1:0",
                            body=json.dumps({"prompt": "hello big world", "max_gen_len": 4}))
    body = json.loads(r["body"].read())
    assert body == {"generation": "hello big world hello", "stop_reason": "length",
                    "prompt_token_count": 3, "generation_token_count": 4}
    stream = client.invoke_model_with_response_stream(
        modelId="meta.llama3-8b-instruct-v1:0", body=json.dumps({"prompt": "hello big world"}))
    chunks = [json.loads(e["chunk"]["bytes"]) for e in stream["body"]]
    assert [c["generation_token_count"] for c in chunks] == [*range(1, 11), 10]
    assert chunks[-1]["amazon-bedrock-invocationMetrics"]["outputTokenCount"] == 10


def test_error_status_is_a_client_error(llm: MockLLMHandle) -> None:
    client = make_client(llm, **{"x-mock-error": "429"})
    with pytest.raises(ClientError) as info:
        client.converse(modelId=CLAUDE, messages=MESSAGES)
    assert info.value.response["Error"]["Code"] == "ThrottlingException"
    assert llm.usage()["total"]["requests"] == 0


def test_stream_error_event_is_an_exception_message(llm: MockLLMHandle) -> None:
    client = make_client(llm, **{"x-mock-stream-error-event": "2"})
    stream = client.converse_stream(modelId=CLAUDE, messages=MESSAGES)["stream"]
    with pytest.raises(EventStreamError) as info:
        list(stream)
    assert "modelStreamErrorException" in str(info.value)
    assert llm.usage()["total"]["requests"] == 0


def test_frames_have_valid_crcs(llm: MockLLMHandle, http: httpx.Client) -> None:
    r = http.post(f"{llm.base_url}/model/{CLAUDE}/converse-stream", json={"messages": MESSAGES})
    assert r.headers["content-type"] == "application/vnd.amazon.eventstream"
    buffer = EventStreamBuffer()
    buffer.add_data(r.content)
    messages = list(buffer)  # botocore checks both CRCs of every message
    assert len(messages) == 1 + 10 + 3
    assert messages[-1].headers[":event-type"] == "metadata"
    corrupt = bytearray(es.event("metadata", {"a": 1}))
    corrupt[-1] ^= 0xFF
    broken = EventStreamBuffer()
    broken.add_data(bytes(corrupt))
    with pytest.raises(ChecksumMismatch):
        list(broken)


def test_anthropic_bedrock_client(llm: MockLLMHandle) -> None:
    client = anthropic.AnthropicBedrock(aws_access_key="AKIDTEST", aws_secret_key="secret",
                                        aws_region="us-east-1", base_url=llm.base_url, max_retries=0)
    message = client.messages.create(model=CLAUDE, max_tokens=100,
                                     messages=[{"role": "user", "content": "hello big world"}])
    assert message.usage.input_tokens == 6 and message.usage.output_tokens == 10
    with client.messages.stream(model=CLAUDE, max_tokens=100,
                                messages=[{"role": "user", "content": "hello big world"}]) as s:
        final = s.get_final_message()
    assert final.usage.output_tokens == 10
    assert llm.usage()["by_endpoint"]["bedrock.invoke"]["requests"] == 2
