"""Gemini (``google-genai``) over real HTTP against the mock server: models, streams, chats, the
async client, Vertex AI, wrap(), early ends; count_tokens never metered."""

from __future__ import annotations

import asyncio
import gc
import inspect
from collections.abc import Iterator
from typing import Any

import pytest
from google import genai
from google.genai import types
from google.oauth2.credentials import Credentials

import aerostack_meter as am
from tests.conftest import billed

from ._support import MODES, collect_garbage, drain, resolve

MODEL = "gemini-2.5-flash"
TEXT = "hello big world"  # P = 6; reply 10 words
RICH = {"x-mock-reasoning": "4", "x-mock-cache": "2", "x-mock-tool-use-prompt": "5"}
RICH_TOTAL = 6 + 5 + 10 + 4  # prompt (cache inside) + tool-use prompt + candidates + thoughts


@pytest.fixture(autouse=True)
def _reset(mock_llm: Any) -> Iterator[None]:
    mock_llm.reset()
    yield
    collect_garbage()


def make(llm: Any, vertex: str = "", **headers: str) -> genai.Client:
    options = types.HttpOptions(base_url=llm.base_url, headers=headers or None)
    if vertex == "express":
        return genai.Client(vertexai=True, api_key="k", http_options=options)
    if vertex == "project":
        return genai.Client(vertexai=True, project="p", location="us-central1",
                            credentials=Credentials(token="t"), http_options=options)  # type: ignore[no-untyped-call]
    return genai.Client(api_key="k", http_options=options)


def models(client: genai.Client, mode: str) -> Any:
    return client.aio.models if mode == "async" else client.models


async def stream_of(client: genai.Client, mode: str, **kw: Any) -> Any:
    return await resolve(models(client, mode).generate_content_stream(model=MODEL, contents=TEXT, **kw))


def stats() -> Any:
    assert am.flush(10)
    return am.stats()


@pytest.mark.parametrize("mode", MODES)
async def test_generate_content_bills_the_provider_total(meter: Any, gateway: Any, mock_llm: Any,
                                                         mode: str) -> None:
    client = make(mock_llm, **RICH)
    r = await resolve(models(client, mode).generate_content(model=MODEL, contents=TEXT))
    assert r.usage_metadata.total_token_count == RICH_TOTAL
    assert billed(gateway) == {"default": RICH_TOTAL}
    s = stats()
    assert (s.calls_metered, s.events_estimated, s.usage_missing) == (1, 0, 0)


@pytest.mark.parametrize("mode", MODES)
async def test_stream_bills_the_last_cumulative_value_once(meter: Any, gateway: Any, mock_llm: Any,
                                                           mode: str) -> None:
    client = make(mock_llm, **RICH, **{"x-mock-chunks": "3"})
    chunks = await drain(await stream_of(client, mode))
    assert len(chunks) == 4 and "".join(c.text or "" for c in chunks).startswith("hello big world")
    assert billed(gateway) == {"default": RICH_TOTAL}  # not the sum of the running counts
    s = stats()
    assert (s.calls_metered, s.events_estimated) == (1, 0)


def test_split_metrics(meter_factory: Any, gateway: Any, mock_llm: Any) -> None:
    meter_factory(default_consumer_id="default", metrics="split")
    client = make(mock_llm, **RICH)
    client.models.generate_content(model=MODEL, contents=TEXT)
    assert am.flush(10)
    rows = {r["metric"]: r["units"] for r in gateway.client.totals()}
    # input 11 (6 prompt + 5 tool use) less 2 cached; output 14 = 10 visible + 4 thinking, once
    assert rows == {"input_tokens": 9, "cached_input_tokens": 2, "output_tokens": 14}


@pytest.mark.parametrize("mode", MODES)
async def test_chat_sessions(meter: Any, gateway: Any, mock_llm: Any, mode: str) -> None:
    client = make(mock_llm)
    chats = client.aio.chats if mode == "async" else client.chats
    chat = chats.create(model=MODEL)
    await resolve(chat.send_message(TEXT))
    await drain(await resolve(chat.send_message_stream(TEXT)))
    usage = mock_llm.usage()["total"]
    assert usage["requests"] == 2
    assert billed(gateway) == {"default": usage["total_tokens"]}
    assert stats().calls_metered == 2


@pytest.mark.parametrize("vertex", ["project", "express"])
def test_vertex_ai(meter: Any, gateway: Any, mock_llm: Any, vertex: str) -> None:
    client = make(mock_llm, vertex)
    client.models.generate_content(model=MODEL, contents=TEXT)
    list(client.models.generate_content_stream(model=MODEL, contents=TEXT))
    assert billed(gateway) == {"default": 32}
    assert stats().calls_metered == 2


def test_count_tokens_is_never_metered(meter: Any, gateway: Any, mock_llm: Any) -> None:
    client = make(mock_llm)
    assert client.models.count_tokens(model=MODEL, contents=TEXT).total_tokens == 6
    assert billed(gateway) == {}
    s = stats()
    assert (s.calls_metered, s.usage_missing) == (0, 0)
    assert mock_llm.stats()["by_endpoint"] == {"gemini.count_tokens": 1}


@pytest.mark.parametrize("mode", ["missing", "negative"])
def test_missing_or_invalid_usage_is_counted_not_billed(meter: Any, gateway: Any, mock_llm: Any,
                                                        mode: str) -> None:
    client = make(mock_llm, **{"x-mock-usage": mode})
    client.models.generate_content(model=MODEL, contents=TEXT)
    list(client.models.generate_content_stream(model=MODEL, contents=TEXT))
    assert billed(gateway) == {}
    s = stats()
    assert (s.usage_missing, s.events_estimated) == (2, 0)


@pytest.mark.parametrize("mode", MODES)
async def test_stream_left_early_is_estimated_once(meter: Any, gateway: Any, mock_llm: Any,
                                                   mode: str) -> None:
    client = make(mock_llm, **{"x-mock-chunks": "5", "x-mock-reasoning": "4"})
    stream = await stream_of(client, mode)
    got = await drain(stream, limit=2)
    await resolve(stream.aclose() if mode == "async" else stream.close())
    del stream
    # the SDK's inner async generators are closed by the event loop (its asyncgen finalizer) once
    # collected; the metered request stream goes with them
    for _ in range(3):
        gc.collect()
        await asyncio.sleep(0)
    # the input is exact (the chunks' promptTokenCount); the output is the larger of the running
    # count (4 visible + 4 thinking) and the text read, 4 words in 18 characters
    seen = got[-1].usage_metadata
    assert (seen.prompt_token_count, seen.candidates_token_count) == (6, 4)
    assert billed(gateway) == {"default": 6 + 4 + 4}
    s = stats()
    assert (s.calls_metered, s.events_estimated, s.usage_missing) == (1, 1, 0)


@pytest.mark.parametrize("mode", MODES)
async def test_wrap_one_client(meter_factory: Any, gateway: Any, mock_llm: Any, mode: str) -> None:
    meter_factory(instrument=False)
    plain = make(mock_llm)
    client = am.wrap(make(mock_llm), consumer_id="usr_w")
    assert isinstance(client, genai.Client)
    await resolve(models(client, mode).generate_content(model=MODEL, contents=TEXT))
    await drain(await stream_of(client, mode))
    chats = client.aio.chats if mode == "async" else client.chats
    await resolve(chats.create(model=MODEL).send_message(TEXT))
    await resolve(models(plain, mode).generate_content(model=MODEL, contents=TEXT))  # not wrapped
    assert billed(gateway) == {"usr_w": 48}
    assert stats().calls_metered == 3


@pytest.mark.parametrize("mode", MODES)
async def test_wrapped_clients_send_through_their_own_api_client(meter_factory: Any, gateway: Any,
                                                                 mock_llm: Any, mode: str) -> None:
    """The SDK's public methods run with the proxy as ``self``: what they read there
    (``self._api_client``) is the wrapped object's, read each time, never kept. Two wrapped
    clients (one proxy class) each send through their own API client; one replaced is seen."""
    meter_factory(instrument=False)
    first, second = make(mock_llm), make(mock_llm)
    one, two = am.wrap(first, consumer_id="usr_1"), am.wrap(second, consumer_id="usr_2")
    for _ in range(2):
        await resolve(models(one, mode).generate_content(model=MODEL, contents=TEXT))
        await resolve(models(two, mode).generate_content(model=MODEL, contents=TEXT))
        assert type(models(one, mode)) is type(models(two, mode))
        assert models(one, mode)._api_client is models(first, mode)._api_client
        assert models(two, mode)._api_client is models(second, mode)._api_client
    assert models(first, mode)._api_client is not models(second, mode)._api_client
    own = models(second, mode)._api_client
    models(second, mode)._api_client = models(first, mode)._api_client
    try:
        assert models(two, mode)._api_client is models(first, mode)._api_client
        await resolve(models(two, mode).generate_content(model=MODEL, contents=TEXT))
    finally:
        models(second, mode)._api_client = own
    assert billed(gateway) == {"usr_1": 32, "usr_2": 48}
    assert stats().calls_metered == 5


def test_patched_and_wrapped_is_billed_once(meter: Any, gateway: Any, mock_llm: Any) -> None:
    client = am.wrap(make(mock_llm))
    client.models.generate_content(model=MODEL, contents=TEXT)
    list(client.models.generate_content_stream(model=MODEL, contents=TEXT))
    assert billed(gateway) == {"default": 32}


def test_per_request_methods_are_the_sdks(meter: Any) -> None:
    """The private methods relied on: every public surface sends through these (one per HTTP
    request, so automatic function calling rounds and continuation hops are each metered)."""
    from google.genai import models as m

    for cls in (m.Models, m.AsyncModels):
        for name in ("_generate_content", "_generate_content_stream"):
            method = cls.__dict__[name]
            # a plain function of ours in the class (not a wrapt wrapper), the SDK's one behind it
            assert am._wrapping.is_ours(method), (cls, name)
            assert method.__wrapped__.__module__ == "google.genai.models", (cls, name)
            assert method.__name__ == name
            assert inspect.iscoroutinefunction(method) is (cls is m.AsyncModels), (cls, name)


def _get_weather(city: str) -> str:
    """The weather in a city."""
    return "sunny"


@pytest.mark.parametrize("mode", MODES)
async def test_automatic_function_calling_bills_every_round(meter: Any, gateway: Any, mock_llm: Any,
                                                            mode: str) -> None:
    """The SDK calls the Python function and asks again: two requests in one call. The response
    the user gets carries only the last one's usage; both are billed."""
    client = make(mock_llm)
    config = types.GenerateContentConfig(tools=[_get_weather])
    r = await resolve(models(client, mode).generate_content(model=MODEL, contents=TEXT, config=config))
    # first request: 6 prompt + a 3-token function call; second: 12 prompt (the question, the
    # call and its response, 3 each per turn) + 10 text
    assert r.usage_metadata.total_token_count == 22  # the second request only
    tally = mock_llm.usage()["total"]
    assert tally["requests"] == 2 and tally["total_tokens"] == 9 + 22
    assert billed(gateway) == {"default": 31}
    assert stats().calls_metered == 2


@pytest.mark.parametrize("mode", MODES)
async def test_methods_and_chats_taken_before_init_are_metered(meter_factory: Any, gateway: Any,
                                                               mock_llm: Any, mode: str) -> None:
    """A bound ``generate_content`` / ``generate_content_stream`` and a chat session, all taken
    before ``init()``: their calls reach the per-request methods through ``self`` (looked up at
    call time), where they are metered, each once."""
    client = make(mock_llm)
    generate = models(client, mode).generate_content
    generate_stream = models(client, mode).generate_content_stream
    chat = (client.aio.chats if mode == "async" else client.chats).create(model=MODEL)
    send = chat.send_message
    meter_factory(default_consumer_id="default")
    await resolve(generate(model=MODEL, contents=TEXT))
    await drain(await resolve(generate_stream(model=MODEL, contents=TEXT)))
    await resolve(send(TEXT))
    await drain(await resolve(chat.send_message_stream(TEXT)))
    usage = mock_llm.usage()["total"]
    assert usage["requests"] == 4
    assert billed(gateway) == {"default": usage["total_tokens"]}
    s = stats()
    assert (s.calls_metered, s.events_estimated, s.usage_missing, s.internal_errors) == (4, 0, 0, 0)
