"""Mistral (``mistralai``) over real HTTP against the mock server: chat.complete / chat.stream and
their async twins, both import paths, wrap(), early ends."""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

import aerostack_meter as am
from tests.conftest import billed

from ._support import MODES, collect_garbage, drain, resolve

try:  # 2.x and later
    from mistralai.client import Mistral

    IMPORT_PATH = "mistralai.client"
except ImportError:  # pragma: no cover - 1.x: ``from mistralai import Mistral``
    from mistralai import Mistral  # type: ignore[attr-defined,no-redef]

    IMPORT_PATH = "mistralai"

MODEL = "mistral-small-latest"
MESSAGES: Any = [{"role": "user", "content": "hello big world"}]  # P = 6, reply 10


_MADE: list[Any] = []


@pytest.fixture(autouse=True)
async def _reset(mock_llm: Any) -> AsyncIterator[None]:
    mock_llm.reset()
    yield
    while _MADE:  # close each client's HTTP clients (an unclosed one warns when collected)
        client = _MADE.pop()
        await client.__aexit__(None, None, None)
        client.__exit__(None, None, None)
    collect_garbage()


def make(llm: Any) -> Any:
    client = Mistral(api_key="k", server_url=llm.base_url)
    _MADE.append(client)
    return client


def complete(client: Any, mode: str, **kw: Any) -> Any:
    fn = client.chat.complete_async if mode == "async" else client.chat.complete
    return resolve(fn(model=MODEL, messages=MESSAGES, **kw))


def stream(client: Any, mode: str, **kw: Any) -> Any:
    fn = client.chat.stream_async if mode == "async" else client.chat.stream
    return resolve(fn(model=MODEL, messages=MESSAGES, **kw))


def stats() -> Any:
    assert am.flush(10)
    return am.stats()


def test_the_import_path_of_this_version() -> None:
    module = importlib.import_module(IMPORT_PATH)
    assert module.Mistral is Mistral


@pytest.mark.parametrize("mode", MODES)
async def test_complete(capture: Any, mock_llm: Any, mode: str) -> None:
    r = await complete(make(mock_llm), mode, http_headers={"x-mock-cache": "2"})
    assert r.usage.total_tokens == 16
    assert am.flush(10)
    assert [(e.units, e.model, e.estimated) for e in capture.events] == [(16, MODEL, False)]


@pytest.mark.parametrize("mode", MODES)
async def test_stream_usage_on_the_last_event(meter: Any, gateway: Any, mock_llm: Any,
                                              mode: str) -> None:
    events = await drain(await stream(make(mock_llm), mode, http_headers={"x-mock-chunks": "3"}))
    assert events[-1].data.usage.total_tokens == 16 and len(events) == 5
    assert billed(gateway) == {"default": 16}
    s = stats()
    assert (s.calls_metered, s.events_estimated) == (1, 0)


def test_split_counts_the_cache_inside_the_prompt(meter_factory: Any, gateway: Any,
                                                  mock_llm: Any) -> None:
    meter_factory(default_consumer_id="default", metrics="split")
    make(mock_llm).chat.complete(model=MODEL, messages=MESSAGES, http_headers={"x-mock-cache": "2"})
    assert am.flush(10)
    rows = {r["metric"]: r["units"] for r in gateway.client.totals()}
    assert rows == {"input_tokens": 4, "cached_input_tokens": 2, "output_tokens": 10}


@pytest.mark.parametrize("mode", MODES)
async def test_stream_left_early_is_estimated_once(meter: Any, gateway: Any, mock_llm: Any,
                                                   mode: str) -> None:
    s = await stream(make(mock_llm), mode)
    if mode == "async":  # leaving the stream's with block (1.x streams have no close())
        async with s:
            got = await drain(s, limit=4)  # the role chunk and "hello big world"
    else:
        with s:
            got = await drain(s, limit=4)
    assert "".join(e.data.choices[0].delta.content for e in got) == "hello big world"
    # input estimated from the messages (15 characters: 4 tokens), output from 15 characters
    assert billed(gateway) == {"default": 4 + 4}
    st = stats()
    assert (st.calls_metered, st.events_estimated, st.usage_missing) == (1, 1, 0)


def test_stream_aborted_by_the_server_is_estimated(meter: Any, gateway: Any, mock_llm: Any) -> None:
    client = make(mock_llm)
    with pytest.raises(Exception):  # noqa: B017 - the SDK's transport error, whatever its class
        list(client.chat.stream(model=MODEL, messages=MESSAGES,
                                http_headers={"x-mock-stream-error-after": "3"}))
    assert billed(gateway) == {"default": 8}
    assert stats().events_estimated == 1


@pytest.mark.parametrize("mode", MODES)
async def test_wrap_one_client(meter_factory: Any, gateway: Any, mock_llm: Any, mode: str) -> None:
    meter_factory(instrument=False)
    client = am.wrap(make(mock_llm), consumer_id="usr_w")
    assert isinstance(client, Mistral)
    await complete(client, mode)
    await drain(await stream(client, mode))
    await complete(make(mock_llm), mode)  # not wrapped
    assert billed(gateway) == {"usr_w": 32}


def test_invalid_usage_is_counted_missing(meter: Any, gateway: Any, mock_llm: Any) -> None:
    # (the SDK itself rejects a null or absent usage; negative counts pass its validation)
    make(mock_llm).chat.complete(model=MODEL, messages=MESSAGES,
                                 http_headers={"x-mock-usage": "negative"})
    assert billed(gateway) == {}
    assert stats().usage_missing == 1


FIM = {"model": "codestral-latest", "prompt": "def add(a, b):", "suffix": "return a + b"}  # P = 7
AGENT = {"agent_id": "ag_mock", "messages": MESSAGES}  # P = 6


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("resource", ["fim", "agents"])
async def test_fim_and_agents(meter_factory: Any, gateway: Any, mock_llm: Any, mode: str,
                              resource: str) -> None:
    """``client.fim`` (fill in the middle) and ``client.agents``: complete and stream, patched and
    through ``wrap()``, each billed once from the usage the server reported."""
    meter_factory(default_consumer_id="default")
    args = FIM if resource == "fim" else AGENT
    suffix = "_async" if mode == "async" else ""
    res = getattr(make(mock_llm), resource)
    r = await resolve(getattr(res, "complete" + suffix)(**args))
    events = await drain(await resolve(getattr(res, "stream" + suffix)(**args)))
    total = 17 if resource == "fim" else 16  # P + the mock's 10 output tokens
    assert r.usage.total_tokens == total and events[-1].data.usage.total_tokens == total
    wrapped = getattr(am.wrap(make(mock_llm), consumer_id="usr_w"), resource)
    await resolve(getattr(wrapped, "complete" + suffix)(**args))
    await drain(await resolve(getattr(wrapped, "stream" + suffix)(**args)))
    assert billed(gateway) == {"default": 2 * total, "usr_w": 2 * total}
    s = stats()
    assert (s.calls_metered, s.events_estimated, s.usage_missing, s.internal_errors) == (4, 0, 0, 0)


@pytest.mark.parametrize("mode", MODES)
async def test_methods_bound_before_init_are_metered(meter_factory: Any, gateway: Any, mock_llm: Any,
                                                     mode: str) -> None:
    """``complete = client.chat.complete`` (and the rest) taken before ``init()`` still hold the
    SDK's own functions: metered where every call sends (``BaseSDK.do_request``), each exactly
    once, and the stream the caller reads is the SDK's, unchanged."""
    client = make(mock_llm)
    suffix = "_async" if mode == "async" else ""
    chat_complete = getattr(client.chat, "complete" + suffix)
    chat_stream = getattr(client.chat, "stream" + suffix)
    fim_complete = getattr(client.fim, "complete" + suffix)
    agents_stream = getattr(client.agents, "stream" + suffix)
    meter_factory(default_consumer_id="default")
    r = await resolve(chat_complete(model=MODEL, messages=MESSAGES))
    events = await drain(await resolve(chat_stream(model=MODEL, messages=MESSAGES)))
    assert r.usage.total_tokens == 16 and events[-1].data.usage.total_tokens == 16
    assert "".join(e.data.choices[0].delta.content or "" for e in events).startswith("hello big world")
    await resolve(fim_complete(**FIM))
    await drain(await resolve(agents_stream(**AGENT)))
    early = await resolve(chat_stream(model=MODEL, messages=MESSAGES))  # left after 4 events
    if mode == "async":
        async with early:
            await drain(early, limit=4)
    else:
        with early:
            await drain(early, limit=4)
    await complete(client, mode)  # through the class: metered at the method, once
    assert billed(gateway) == {"default": 16 + 16 + 17 + 16 + (4 + 4) + 16}
    s = stats()
    assert (s.calls_metered, s.events_estimated, s.usage_missing, s.internal_errors) == (6, 1, 0, 0)
