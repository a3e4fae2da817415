"""Bedrock runtime (``boto3``) over real HTTP against the mock server: converse, converse_stream,
invoke_model, invoke_model_with_response_stream on clients from ``boto3.client`` and a
``Session``, wrap(), early ends; AnthropicBedrock stays metered once."""

from __future__ import annotations

import contextlib
import gc
import json
from collections.abc import Iterator
from typing import Any

import anthropic
import boto3
import pytest
from botocore.config import Config
from botocore.eventstream import EventStream

import aerostack_meter as am
from tests.conftest import billed

from ._support import collect_garbage

MODEL = "anthropic.claude-3-haiku-20240307-v1:0"
MESSAGES = [{"role": "user", "content": [{"text": "hello big world"}]}]  # P = 6, reply 10
CLAUDE_BODY = json.dumps({"anthropic_version": "bedrock-2023-05-31", "max_tokens": 100,
                          "messages": [{"role": "user", "content": "hello big world"}]})


@pytest.fixture(autouse=True)
def _reset(mock_llm: Any) -> Iterator[None]:
    mock_llm.reset()
    yield
    collect_garbage()


def make(llm: Any, session: Any = None, **headers: str) -> Any:
    factory = session.client if session is not None else boto3.client
    client = factory("bedrock-runtime", endpoint_url=llm.base_url, region_name="us-east-1",
                     aws_access_key_id="AKIDTEST", aws_secret_access_key="secret",
                     config=Config(retries={"max_attempts": 1}))

    def add_headers(request: Any, **_: Any) -> None:
        for name, value in headers.items():
            request.headers[name] = value

    client.meta.events.register("before-sign.bedrock-runtime.*", add_headers)
    return client


def stats() -> Any:
    assert am.flush(10)
    return am.stats()


def events(capture: Any) -> list[tuple[str, int, str | None, bool]]:
    assert am.flush(10)
    return [(e.metric, e.units, e.model, e.estimated) for e in capture.events]


@pytest.mark.parametrize("how", ["client", "session"])
def test_converse_with_cache_parts(capture: Any, mock_llm: Any, how: str) -> None:
    client = make(mock_llm, boto3.Session() if how == "session" else None,
                  **{"x-mock-cache": "2", "x-mock-cache-write": "1"})
    r = client.converse(modelId=MODEL, messages=MESSAGES)
    assert r["usage"]["inputTokens"] == 3 and r["usage"]["totalTokens"] == 16
    assert events(capture) == [("tokens", 16, MODEL, False)]  # not 13: the cache is input too


def test_split_metrics(meter_factory: Any, gateway: Any, mock_llm: Any) -> None:
    meter_factory(default_consumer_id="default", metrics="split")
    client = make(mock_llm, **{"x-mock-cache": "2", "x-mock-cache-write": "1"})
    client.converse(modelId=MODEL, messages=MESSAGES)
    assert am.flush(10)
    rows = {r["metric"]: r["units"] for r in gateway.client.totals()}
    assert rows == {"input_tokens": 3, "cached_input_tokens": 2, "cache_write_tokens": 1,
                    "output_tokens": 10}


def test_converse_stream(capture: Any, mock_llm: Any) -> None:
    client = make(mock_llm)
    response = client.converse_stream(modelId=MODEL, messages=MESSAGES)
    assert isinstance(response["stream"], EventStream)  # the proxy keeps the SDK's type
    got = list(response["stream"])
    assert list(got[-1]) == ["metadata"] and len(got) == 14  # every event reaches the user
    assert events(capture) == [("tokens", 16, MODEL, False)]


def test_invoke_model_reads_headers_and_leaves_the_body(capture: Any, mock_llm: Any) -> None:
    client = make(mock_llm, **{"x-mock-cache": "2"})
    response = client.invoke_model(modelId=MODEL, body=CLAUDE_BODY)
    body = json.loads(response["body"].read())  # the user still reads the whole body
    assert body["usage"]["output_tokens"] == 10
    assert events(capture) == [("tokens", 16, MODEL, False)]


def test_invoke_model_with_response_stream(capture: Any, mock_llm: Any) -> None:
    client = make(mock_llm)
    response = client.invoke_model_with_response_stream(modelId=MODEL, body=CLAUDE_BODY)
    chunks = [json.loads(e["chunk"]["bytes"]) for e in response["body"]]
    assert chunks[-1]["type"] == "message_stop"
    llama = client.invoke_model_with_response_stream(
        modelId="meta.llama3-8b-instruct-v1:0", body=json.dumps({"prompt": "hello big world"}))
    list(llama["body"])
    assert events(capture) == [("tokens", 16, MODEL, False),
                               ("tokens", 13, "meta.llama3-8b-instruct-v1:0", False)]


def test_stream_left_early_is_estimated_once(meter: Any, gateway: Any, mock_llm: Any) -> None:
    client = make(mock_llm)
    stream = client.converse_stream(modelId=MODEL, messages=MESSAGES)["stream"]
    got = []
    for event in stream:
        got.append(event)
        if len(got) == 4:  # messageStart and three text pieces: "hello big world"
            break
    stream.close()
    # input estimated from the request text (15 characters: 4 tokens), output from 15 characters
    assert billed(gateway) == {"default": 4 + 4}
    s = stats()
    assert (s.calls_metered, s.events_estimated, s.usage_missing) == (1, 1, 0)


@pytest.mark.parametrize("client_of", ["patched", "wrap"])
def test_invoke_stream_left_early_is_estimated_from_the_text_read(
        meter: Any, gateway: Any, mock_llm: Any, client_of: str) -> None:
    """The text deltas' characters are counted as the chunks pass (only the count is kept): a
    stream left after three of them bills the request's estimate plus theirs, once."""
    client = make(mock_llm) if client_of == "patched" else am.wrap(make(mock_llm))
    body = client.invoke_model_with_response_stream(modelId=MODEL, body=CLAUDE_BODY)["body"]
    texts: list[str] = []
    for event in body:
        data = json.loads(event["chunk"]["bytes"])
        if data["type"] == "content_block_delta":
            texts.append(data["delta"]["text"])
            if len(texts) == 3:
                break
    body.close()
    chars = sum(map(len, texts))
    assert 4 < chars <= 24  # three words of the mock's reply
    # input estimated from the request text (15 characters: 4 tokens); output: a token per 4 characters
    assert billed(gateway) == {"default": 4 + -(-chars // 4)}
    s = stats()
    assert (s.calls_metered, s.events_estimated, s.usage_missing, s.internal_errors) == (1, 1, 0, 0)


def test_stream_dropped_unread_is_estimated_once(meter: Any, gateway: Any, mock_llm: Any) -> None:
    client = make(mock_llm)
    response = client.invoke_model_with_response_stream(modelId=MODEL, body=CLAUDE_BODY)
    del response
    gc.collect()
    assert billed(gateway) == {"default": 4}  # the body's text, estimated; no output read
    assert stats().events_estimated == 1


def test_hostile_usage_is_counted_missing(meter: Any, gateway: Any, mock_llm: Any) -> None:
    # botocore itself turns "6" into 6 in a JSON body, so negative counts; headers stay strings
    make(mock_llm, **{"x-mock-usage": "negative"}).converse(modelId=MODEL, messages=MESSAGES)
    make(mock_llm, **{"x-mock-usage": "string"}).invoke_model(modelId=MODEL, body=CLAUDE_BODY)
    assert billed(gateway) == {}
    assert stats().usage_missing == 2


def test_errors_are_not_billed(meter: Any, gateway: Any, mock_llm: Any) -> None:
    client = make(mock_llm, **{"x-mock-error": "400"})
    with pytest.raises(client.exceptions.ValidationException):
        client.converse(modelId=MODEL, messages=MESSAGES)
    assert billed(gateway) == {}
    s = stats()
    assert (s.calls_metered, s.usage_missing, s.internal_errors) == (0, 0, 0)


def test_client_built_before_init_is_metered_by_wrap(meter_factory: Any, gateway: Any,
                                                     mock_llm: Any) -> None:
    early = make(mock_llm)
    meter_factory(instrument=False)
    client = am.wrap(early, consumer_id="usr_w")
    client.converse(modelId=MODEL, messages=MESSAGES)
    list(client.converse_stream(modelId=MODEL, messages=MESSAGES)["stream"])
    client.invoke_model(modelId=MODEL, body=CLAUDE_BODY)["body"].read()
    list(client.invoke_model_with_response_stream(modelId=MODEL, body=CLAUDE_BODY)["body"])
    early.converse(modelId=MODEL, messages=MESSAGES)  # the unwrapped client: not metered
    assert billed(gateway) == {"usr_w": 64}


@pytest.mark.parametrize("how", ["client", "session"])
def test_client_built_before_init_is_metered(meter_factory: Any, gateway: Any, mock_llm: Any,
                                             how: str) -> None:
    """What an app does: its boto3 client is built at import, ``init()`` runs later."""
    early = make(mock_llm, boto3.Session() if how == "session" else None)
    converse = early.converse  # a method bound before init(): sends through _make_api_call too
    meter_factory(default_consumer_id="usr_e")
    converse(modelId=MODEL, messages=MESSAGES)
    list(early.converse_stream(modelId=MODEL, messages=MESSAGES)["stream"])
    early.invoke_model(modelId=MODEL, body=CLAUDE_BODY)["body"].read()
    list(early.invoke_model_with_response_stream(modelId=MODEL, body=CLAUDE_BODY)["body"])
    am.wrap(early, consumer_id="usr_w").converse(modelId=MODEL, messages=MESSAGES)  # once, as usr_w
    make(mock_llm).converse(modelId=MODEL, messages=MESSAGES)  # built after: metered at its method, once
    assert billed(gateway) == {"usr_e": 64 + 16, "usr_w": 16}
    s = stats()
    assert (s.calls_metered, s.events_estimated, s.usage_missing, s.internal_errors) == (6, 0, 0, 0)


def test_patched_and_wrapped_is_billed_once(meter: Any, gateway: Any, mock_llm: Any) -> None:
    client = am.wrap(make(mock_llm))
    client.converse(modelId=MODEL, messages=MESSAGES)
    list(client.converse_stream(modelId=MODEL, messages=MESSAGES)["stream"])
    assert billed(gateway) == {"default": 32}


def test_uninstrument_turns_built_clients_off(meter: Any, gateway: Any, mock_llm: Any) -> None:
    client = make(mock_llm)
    am.uninstrument()
    client.converse(modelId=MODEL, messages=MESSAGES)
    make(mock_llm).converse(modelId=MODEL, messages=MESSAGES)
    assert billed(gateway) == {}


def test_methods_and_hook_are_plain_functions_restored_exactly(meter: Any, mock_llm: Any) -> None:
    """The client class's methods and BaseClient._make_api_call are replaced by plain functions of
    ours (no wrapt binding per call) that keep botocore's names and docstrings; uninstrument()
    puts the original _make_api_call back."""
    from botocore.client import BaseClient

    from aerostack_meter._wrapping import is_ours

    original = BaseClient.__dict__["_make_api_call"]
    assert is_ours(original) and original.__wrapped__.__module__ == "botocore.client"
    client = make(mock_llm)
    method = type(client).__dict__["converse"]
    assert is_ours(method) and method.__name__ == "converse"
    assert "Converse" in str(method.__doc__) and method.__wrapped__.__name__ == "converse"
    assert not is_ours(type(client).__dict__["list_async_invokes"])  # other methods: untouched
    am.uninstrument()
    assert not is_ours(BaseClient.__dict__["_make_api_call"])
    assert BaseClient.__dict__["_make_api_call"] is original.__wrapped__


def test_async_client_class_methods_are_metered_coroutine_functions(meter: Any, gateway: Any) -> None:
    """A botocore-based async SDK (aiobotocore) builds its client class through the same
    ``creating-client-class`` event with ``async def`` methods: each is replaced by an ``async def``
    of ours (still a coroutine function to ``inspect``) that meters the awaited response."""
    import asyncio
    import inspect

    from aerostack_meter._wrapping import is_ours
    from aerostack_meter.providers import bedrock

    async def converse(self: Any, **kwargs: Any) -> dict[str, Any]:
        """Converse, the async SDK's."""
        return {"output": {"message": {"role": "assistant", "content": [{"text": "hi"}]}},
                "usage": {"inputTokens": 5, "outputTokens": 7, "totalTokens": 12}}

    attributes: dict[str, Any] = {"converse": converse}
    bedrock._on_client_class(attributes)  # as botocore's event emitter calls it
    method = attributes["converse"]
    assert is_ours(method) and inspect.iscoroutinefunction(method) and method.__wrapped__ is converse
    client = type("AsyncBedrockRuntime", (), attributes)()
    response = asyncio.run(client.converse(modelId=MODEL, messages=MESSAGES))
    assert response["usage"]["totalTokens"] == 12
    assert am.flush(10)
    assert billed(gateway) == {"default": 12}
    s = am.stats()
    assert (s.calls_metered, s.usage_missing, s.internal_errors) == (1, 0, 0)


def test_api_call_hook_takes_botocore_parameters_and_keyword_calls(meter_factory: Any, gateway: Any,
                                                                   mock_llm: Any) -> None:
    """The hook on ``BaseClient._make_api_call`` has botocore's own two parameters (nothing packed
    per call on every botocore call); a client built before ``init()`` is metered through it,
    positional or keyword, and a call of another service passes through."""
    import inspect

    from botocore.client import BaseClient

    early = make(mock_llm)
    meter_factory(default_consumer_id="usr_h")
    hook = BaseClient.__dict__["_make_api_call"]
    assert list(inspect.signature(hook).parameters) == ["self", "operation_name", "api_params"]
    params = {"modelId": MODEL, "messages": MESSAGES}
    assert early._make_api_call("Converse", params)["usage"]["totalTokens"] == 16
    early._make_api_call(operation_name="Converse", api_params=params)
    other = boto3.client("s3", endpoint_url=mock_llm.base_url, region_name="us-east-1",
                         aws_access_key_id="AKIDTEST", aws_secret_access_key="secret")
    with contextlib.suppress(Exception):  # the mock is no S3: whatever it answers, unmetered
        other.list_buckets()
    assert billed(gateway) == {"usr_h": 32}
    s = stats()
    assert (s.calls_metered, s.usage_missing, s.internal_errors) == (2, 0, 0)


def test_api_call_hook_of_another_signature_takes_the_general_form(meter: Any, gateway: Any,
                                                                    mock_llm: Any) -> None:
    """A botocore whose ``_make_api_call`` takes other parameters gets the general hook: the
    two-argument call is metered, any other is passed through as it came."""
    from botocore.client import BaseClient

    from aerostack_meter._global import get_meter
    from aerostack_meter.providers.bedrock import _api_call_hook

    botocore_own = BaseClient.__dict__["_make_api_call"].__wrapped__
    seen: list[Any] = []

    def newer(self: Any, operation_name: Any, api_params: Any, context: Any = None) -> Any:
        seen.append(context)
        return botocore_own(self, operation_name, api_params)

    hook = _api_call_hook(get_meter, newer)
    early = make(mock_llm)
    am.uninstrument()  # the client's class and BaseClient without ours: only this hook meters
    params = {"modelId": MODEL, "messages": MESSAGES}
    hook(early, "Converse", params)
    hook(early, "Converse", params, {"x": 1})
    hook(early, "Converse", params, context={"y": 2})
    assert seen == [None, {"x": 1}, {"y": 2}]
    assert billed(gateway) == {"default": 16}


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_bedrock_is_metered_once(meter: Any, gateway: Any, mock_llm: Any,
                                           stream: bool) -> None:
    client = anthropic.AnthropicBedrock(aws_access_key="AKIDTEST", aws_secret_key="secret",
                                        aws_region="us-east-1", base_url=mock_llm.base_url,
                                        max_retries=0)
    args: Any = {"model": MODEL, "max_tokens": 100,
                 "messages": [{"role": "user", "content": "hello big world"}]}
    if stream:
        with client.messages.stream(**args) as s:
            s.get_final_message()
    else:
        client.messages.create(**args)
    assert billed(gateway) == {"default": 16}
    assert stats().calls_metered == 1
