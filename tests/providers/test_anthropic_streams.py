"""Anthropic streams: ``create(stream=True)`` and the ``stream()`` helper, sync and async,
exhausted or ended early (break, error, close, cancellation, GC): billed once, never zero."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import billed

from ._anthropic_support import (  # noqa: F401 (collect_garbage: an autouse fixture)
    ARGS,
    MODES,
    SDK_MAJOR,
    client,
    close,
    collect_garbage,
    drain,
    enter,
    estimate_output,
    input_units,
    norm,
    resolve,
    stats,
    stream_units,
    text_chars,
    units,
    unmetered,
)
from ._support import cancel_while_reading

RESOURCES = ["messages", "beta.messages"]
REPEAT = {"x-mock-repeat-deltas": "1"}  # message_delta repeats running cumulative totals
RICH = {**REPEAT, "x-mock-cache": "3", "x-mock-cache-write": "2", "x-mock-web-search": "1"}


def resource(c: Any, path: str) -> Any:
    for part in path.split("."):
        c = getattr(c, part)
    return c


def assert_once(*, estimated: bool) -> None:
    s = stats()
    assert (s.calls_metered, s.events_estimated, s.usage_missing, s.internal_errors) == (1, int(estimated), 0, 0)


def assert_estimated_once(gateway: Any, got: list[Any]) -> None:
    """A stream ended early, billed once: input from message_start, output estimated from the
    text read."""
    start = got[0].message.usage
    assert billed(gateway) == {"default": input_units(start) + estimate_output(text_chars(got))}
    assert_once(estimated=True)


# -- create(stream=True) -----------------------------------------------------------------------------

@pytest.mark.parametrize("path", RESOURCES)
@pytest.mark.parametrize("mode", MODES)
async def test_create_stream_exhausted(meter: Any, gateway: Any, mock_llm: Any, mode: str, path: str) -> None:
    with unmetered():
        base = await drain(await resolve(resource(client(mock_llm, mode), path).create(**ARGS, stream=True, extra_headers=RICH)))
    stream = await resolve(resource(client(mock_llm, mode), path).create(**ARGS, stream=True, extra_headers=RICH))
    if SDK_MAJOR >= 1:  # 0.x's Stream metaclass answers isinstance() False for any proxy
        import anthropic
        assert isinstance(stream, anthropic.AsyncStream if mode == "async" else anthropic.Stream)
    events = await drain(stream)
    assert norm(events) == norm(base)
    deltas = [e for e in events if e.type == "message_delta"]
    assert len(deltas) == 4 and deltas[0].usage.output_tokens < deltas[-1].usage.output_tokens
    assert billed(gateway) == {"default": stream_units(events)}  # the last delta, not their sum
    assert_once(estimated=False)


@pytest.mark.parametrize("how", ["break", "close", "error", "abort", "gc"])
@pytest.mark.parametrize("mode", MODES)
async def test_create_stream_early_end_is_estimated_once(meter: Any, gateway: Any, mock_llm: Any, mode: str,
                                                         how: str) -> None:
    import anthropic

    headers = {"error": {"x-mock-stream-error-event": "3"}, "abort": {"x-mock-stream-error-after": "3"}}
    stream = await resolve(client(mock_llm, mode).messages.create(
        **ARGS, stream=True, extra_headers=headers.get(how, {})))
    got: list[Any] = []
    if how == "error":  # the provider's in-stream error event
        with pytest.raises(anthropic.APIStatusError):
            await drain(stream, into=got)
    elif how == "abort":  # the connection is cut (the SDK lets the transport's error through)
        with pytest.raises(Exception) as raised:
            await drain(stream, into=got)
        assert not isinstance(raised.value, AssertionError)
    elif how == "break":
        async with enter(stream, mode):
            await drain(stream, limit=5, into=got)  # message_start, content_block_start, 3 text deltas
    else:
        await drain(stream, limit=5, into=got)
        if how == "close":
            await close(stream)
            await close(stream)  # twice: still once
        else:
            del stream
            gc.collect()
    assert_estimated_once(gateway, got)
    assert text_chars(got) > 0


@pytest.mark.parametrize("mode", MODES)
async def test_create_stream_consumed_then_closed_counts_once(meter: Any, gateway: Any, mock_llm: Any,
                                                              mode: str) -> None:
    cm = await resolve(client(mock_llm, mode).messages.create(**ARGS, stream=True))
    async with enter(cm, mode) as stream:
        events = await drain(stream)
    await close(cm)
    assert billed(gateway) == {"default": stream_units(events)}
    assert_once(estimated=False)


async def test_create_stream_cancelled_is_estimated_once(meter: Any, gateway: Any, mock_llm: Any) -> None:
    async def consume(keep: Callable[[Any], None]) -> None:
        stream = await client(mock_llm, "async").messages.create(
            **ARGS, stream=True, extra_headers={"x-mock-chunk-delay-ms": "200"})
        async for e in stream:
            keep(e)

    got = await cancel_while_reading(consume, 3)
    assert_estimated_once(gateway, got)


# -- the stream() helper ------------------------------------------------------------------------------

async def _use(stream: Any, surface: str, mode: str) -> Any:
    """What a user gets from the helper's stream through one of its reading surfaces."""
    if surface == "events":
        return norm(await drain(stream))
    if surface == "text_stream":
        return "".join(await drain(stream.text_stream))
    if surface == "until_done":
        await resolve(stream.until_done())
        return norm(stream.current_message_snapshot)
    if surface == "get_final_message":
        return norm(await resolve(stream.get_final_message()))
    return await resolve(stream.get_final_text())


@pytest.mark.parametrize("surface", ["events", "text_stream", "until_done", "get_final_message", "get_final_text"])
@pytest.mark.parametrize("path", RESOURCES)
@pytest.mark.parametrize("mode", MODES)
async def test_stream_helper_surfaces(meter: Any, gateway: Any, mock_llm: Any, mode: str, path: str,
                                      surface: str) -> None:
    async def run() -> tuple[Any, Any]:
        manager = resource(client(mock_llm, mode), path).stream(**ARGS, extra_headers=RICH)
        async with enter(manager, mode) as stream:
            out = await _use(stream, surface, mode)
            final = await resolve(stream.get_final_message())  # a second read: nothing new to bill
        return out, final

    with unmetered():
        base, _ = await run()
    out, final = await run()
    assert out == base
    assert final.usage.cache_read_input_tokens == 3
    assert billed(gateway) == {"default": units(final.usage)}  # repeated running totals: no over-count
    assert_once(estimated=False)


@pytest.mark.parametrize("how", ["break", "exception", "error_event", "unread"])
@pytest.mark.parametrize("path", RESOURCES)
@pytest.mark.parametrize("mode", MODES)
async def test_stream_helper_early_end_is_estimated_once(meter: Any, gateway: Any, mock_llm: Any, mode: str,
                                                         path: str, how: str) -> None:
    import anthropic

    headers = {"x-mock-stream-error-event": "3"} if how == "error_event" else {}
    manager = resource(client(mock_llm, mode), path).stream(**ARGS, extra_headers=headers)
    raw: list[Any] = []
    failing = how in ("exception", "error_event")
    with pytest.raises((RuntimeError, anthropic.APIStatusError)) if failing else contextlib.nullcontext():
        async with enter(manager, mode) as stream:
            if how == "error_event":
                await drain(stream, into=raw)
            elif how != "unread":
                await drain(stream, limit=8, into=raw)  # start, block start, 3 x (delta, text)
                if how == "exception":
                    raise RuntimeError("user code failed")
    s = stats()
    assert (s.calls_metered, s.events_estimated) == (1, 1)
    total = billed(gateway)["default"]
    if how == "unread":  # nothing read: the input is estimated from the request
        assert total > 0
        return
    start = raw[0].message.usage
    assert total == input_units(start) + estimate_output(text_chars(raw))
    assert text_chars(raw) > 0


async def test_stream_helper_cancelled_is_estimated_once(meter: Any, gateway: Any, mock_llm: Any) -> None:
    async def consume(keep: Callable[[Any], None]) -> None:
        manager = client(mock_llm, "async").messages.stream(**ARGS, extra_headers={"x-mock-chunk-delay-ms": "200"})
        async with manager as stream:
            async for e in stream:
                keep(e)

    got = await cancel_while_reading(consume, 3)
    assert_estimated_once(gateway, got)


@pytest.mark.parametrize("usage", ["negative", "huge"])
@pytest.mark.parametrize("mode", MODES)
async def test_stream_helper_hostile_usage_is_missing(meter: Any, gateway: Any, mock_llm: Any, mode: str,
                                                      usage: str) -> None:
    manager = client(mock_llm, mode).messages.stream(**ARGS, extra_headers={"x-mock-usage": usage})
    async with enter(manager, mode) as stream:
        await resolve(stream.until_done())
    assert billed(gateway) == {}
    s = stats()
    assert (s.calls_metered, s.usage_missing) == (0, 1)


@pytest.mark.parametrize("mode", MODES)
async def test_stream_helper_failed_call_is_not_metered(meter: Any, gateway: Any, mock_llm: Any, mode: str) -> None:
    import anthropic

    failing = client(mock_llm, mode).messages.stream(**ARGS, extra_headers={"x-mock-error": "500"})
    with pytest.raises(anthropic.InternalServerError):
        async with enter(failing, mode):
            pass
    del failing
    gc.collect()  # the manager is gone: its request failed, so nothing is billed or counted
    assert billed(gateway) == {}
    s = stats()
    assert (s.calls_metered, s.usage_missing, s.internal_errors) == (0, 0, 0)


def test_stream_helper_never_entered_is_not_metered(meter: Any, gateway: Any, mock_llm: Any) -> None:
    manager = client(mock_llm, "sync").messages.stream(**ARGS)  # sends nothing until entered
    del manager
    gc.collect()
    assert billed(gateway) == {}
    assert stats().calls_metered == 0


# -- a malformed event the bare SDK yields fine ------------------------------------------------

_MALFORMED_SSE = b"".join(
    b"event: " + name.encode() + b"\ndata: " + data.encode() + b"\n\n" for name, data in [
        ("message_start", '{"type":"message_start","message":{"id":"msg_1","type":"message",'
         '"role":"assistant","model":"claude-mock","content":[],"stop_reason":null,'
         '"usage":{"input_tokens":11,"output_tokens":1}}}'),
        ("content_block_start", '{"type":"content_block_start","index":0,'
         '"content_block":{"type":"text","text":""}}'),
        ("content_block_delta", '{"type":"content_block_delta","index":0,'
         '"delta":{"type":["text_delta"],"text":"abcdefgh"}}'),  # an unhashable delta type
        ("content_block_delta", '{"type":"content_block_delta","index":0,'
         '"delta":{"type":"text_delta","text":"abcdefgh"}}'),
        ("content_block_stop", '{"type":"content_block_stop","index":0}'),
        ("message_delta", '{"type":"message_delta","delta":{"stop_reason":"end_turn"},'
         '"usage":{"output_tokens":4}}'),
        ("message_stop", '{"type":"message_stop"}'),
    ])


@pytest.mark.parametrize("mode", MODES)
async def test_a_malformed_event_never_reaches_the_users_loop(mode: str, meter: Any, gateway: Any) -> None:
    """The SDK yields an event our reader cannot read (``TypeError`` inside it): the user's loop
    gets every event, the error is counted, and the usage reported later is billed exactly."""
    from ._anthropic_support import HX

    def handler(request: Any) -> Any:
        return HX.Response(200, headers={"content-type": "text/event-stream"}, content=_MALFORMED_SSE)

    transport = HX.MockTransport(handler)
    http = HX.AsyncClient(transport=transport) if mode == "async" else HX.Client(transport=transport)
    c = client_with_http(mode, http)
    s = await resolve(c.messages.create(**ARGS, stream=True))
    got = await drain(s)
    assert [e.type for e in got][-1] == "message_stop" and len(got) == 7
    s = stats()
    assert (s.internal_errors, s.calls_metered, s.events_estimated, s.usage_missing) == (1, 1, 0, 0)
    assert billed(gateway) == {"default": 11 + 4}


def client_with_http(mode: str, http: Any) -> Any:
    import anthropic

    cls = anthropic.AsyncAnthropic if mode == "async" else anthropic.Anthropic
    return cls(api_key="sk-test", base_url="http://127.0.0.1:9", max_retries=0, http_client=http)


@pytest.mark.parametrize("mode", MODES)
async def test_create_stream_left_at_message_delta_is_estimated_once(meter: Any, gateway: Any, mock_llm: Any,
                                                                     mode: str) -> None:
    """A loop that stops at the ``message_delta`` carrying ``stop_reason`` and its usage, then
    ``close()``: ``message_stop`` (which says no more deltas follow: a stream may repeat running
    totals) is never read, so the bill is an estimate, once: input exact from ``message_start``,
    output the larger of the delta's count and the text read (one token per four characters)."""
    stream = await resolve(client(mock_llm, mode).messages.create(**ARGS, stream=True))
    got: list[Any] = []
    async for event in _events(stream, mode):
        got.append(event)
        if event.type == "message_delta":
            break
    await close(stream)
    start, delta = got[0].message.usage, got[-1].usage
    assert got[-1].delta.stop_reason == "end_turn"
    output = max(delta.output_tokens, estimate_output(text_chars(got)))
    assert billed(gateway) == {"default": input_units(start) + output}
    assert_once(estimated=True)


async def _events(stream: Any, mode: str) -> Any:
    if mode == "async":
        async for event in stream:
            yield event
    else:
        for event in stream:
            yield event
