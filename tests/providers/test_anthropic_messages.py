"""Anthropic non-streaming surfaces: create, parse, raw variants, count_tokens, failures, hostile
usage, uninstrument. Real SDK against the mock LLM server; units checked at the gateway."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

import aerostack_meter as am
from tests.conftest import billed

from ._anthropic_support import (  # noqa: F401 (collect_garbage: an autouse fixture)
    ARGS,
    MODES,
    USER,
    client,
    collect_garbage,
    drain,
    enter,
    norm,
    resolve,
    stats,
    stream_units,
    units,
    unmetered,
)

RESOURCES = ["messages", "beta.messages"]
RICH = {"x-mock-cache": "3", "x-mock-cache-write": "2", "x-mock-web-search": "1", "x-mock-reasoning": "4"}


def resource(c: Any, path: str) -> Any:
    for part in path.split("."):
        c = getattr(c, part)
    return c


@pytest.fixture
def llm(mock_llm: Any) -> Any:
    return mock_llm


@pytest.mark.parametrize("path", RESOURCES)
@pytest.mark.parametrize("mode", MODES)
async def test_create_is_metered_exactly_once(meter: Any, gateway: Any, llm: Any, mode: str, path: str) -> None:
    with unmetered():
        base = await resolve(resource(client(llm, mode), path).create(**ARGS, extra_headers=RICH))
    msg = await resolve(resource(client(llm, mode), path).create(**ARGS, extra_headers=RICH))

    assert type(msg) is type(base)
    assert norm(msg) == norm(base)
    assert msg.usage.cache_read_input_tokens == 3 and msg.usage.cache_creation_input_tokens == 2
    assert billed(gateway) == {"default": units(msg.usage)}
    s = stats()
    assert (s.calls_metered, s.events_estimated, s.usage_missing) == (1, 0, 0)


@pytest.mark.parametrize("path", RESOURCES)
@pytest.mark.parametrize("mode", MODES)
async def test_parse_is_metered(meter: Any, gateway: Any, llm: Any, mode: str, path: str) -> None:
    if not hasattr(resource(client(llm, mode), path), "parse"):
        pytest.skip("this SDK has no parse()")
    with unmetered():
        base = await resolve(resource(client(llm, mode), path).parse(**ARGS))
    msg = await resolve(resource(client(llm, mode), path).parse(**ARGS))
    assert norm(msg) == norm(base)
    assert billed(gateway) == {"default": units(msg.usage)}
    assert stats().calls_metered == 1


@pytest.mark.parametrize("path", RESOURCES)
@pytest.mark.parametrize("mode", MODES)
async def test_count_tokens_is_never_metered(meter: Any, gateway: Any, llm: Any, mode: str, path: str) -> None:
    count = await resolve(resource(client(llm, mode), path).count_tokens(model="m", messages=USER))
    assert count.input_tokens > 0
    assert billed(gateway) == {}
    s = stats()
    assert (s.calls_metered, s.usage_missing) == (0, 0)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("mode", MODES)
async def test_failed_call_is_not_metered(meter: Any, gateway: Any, llm: Any, mode: str, stream: bool) -> None:
    with pytest.raises(anthropic.InternalServerError):
        await resolve(client(llm, mode).messages.create(**ARGS, stream=stream, extra_headers={"x-mock-error": "500"}))
    assert billed(gateway) == {}
    s = stats()
    assert (s.calls_metered, s.usage_missing, s.internal_errors) == (0, 0, 0)


@pytest.mark.parametrize("usage", ["null", "missing", "negative", "string", "huge"])
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("mode", MODES)
async def test_hostile_usage_is_never_billed(meter: Any, gateway: Any, llm: Any, mode: str, stream: bool,
                                             usage: str) -> None:
    result = await resolve(client(llm, mode).messages.create(**ARGS, stream=stream, extra_headers={"x-mock-usage": usage}))
    if stream:
        result = await drain(result)
        if usage == "string" and type(result[0].message.usage.input_tokens) is int:
            # the SDK's event parsing coerced "12" to 12: the user sees valid numbers, so they count
            assert billed(gateway) == {"default": stream_units(result)}
            assert stats().calls_metered == 1
            return
    assert billed(gateway) == {}
    s = stats()
    assert (s.calls_metered, s.usage_missing, s.internal_errors) == (0, 1, 0)


# -- raw variants ---------------------------------------------------------------------------------

@pytest.mark.parametrize("level", ["resource", "client"])
@pytest.mark.parametrize("mode", MODES)
async def test_with_raw_response_is_metered_before_parse(meter: Any, gateway: Any, llm: Any, mode: str,
                                                         level: str) -> None:
    def raw(c: Any) -> Any:
        return c.messages.with_raw_response if level == "resource" else c.with_raw_response.messages

    with unmetered():
        base = await resolve(raw(client(llm, mode)).create(**ARGS))
        base_msg = await resolve(base.parse())
    response = await resolve(raw(client(llm, mode)).create(**ARGS))
    assert response.status_code == 200 and response.headers["content-type"] == base.headers["content-type"]
    # the body is already read: metered even if the user never parses it
    s = stats()
    assert s.calls_metered == 1
    msg = await resolve(response.parse())
    assert norm(msg) == norm(base_msg)
    assert await resolve(response.parse()) is msg
    assert billed(gateway) == {"default": units(msg.usage)}
    assert stats().calls_metered == 1


@pytest.mark.parametrize("mode", MODES)
async def test_beta_with_raw_response_parse(meter: Any, gateway: Any, llm: Any, mode: str) -> None:
    raw = client(llm, mode).beta.messages.with_raw_response
    if not hasattr(raw, "parse"):
        pytest.skip("this SDK has no raw beta parse()")
    msg = await resolve((await resolve(raw.parse(**ARGS))).parse())
    assert billed(gateway) == {"default": units(msg.usage)}
    assert stats().calls_metered == 1


@pytest.mark.parametrize("mode", MODES)
async def test_with_raw_response_stream(meter: Any, gateway: Any, llm: Any, mode: str) -> None:
    with unmetered():
        base = await drain(await resolve((await resolve(
            client(llm, mode).messages.with_raw_response.create(**ARGS, stream=True))).parse()))
    response = await resolve(client(llm, mode).messages.with_raw_response.create(**ARGS, stream=True))
    events = await drain(await resolve(response.parse()))
    assert norm(events) == norm(base)
    assert billed(gateway) == {"default": stream_units(events)}
    s = stats()
    assert (s.calls_metered, s.events_estimated) == (1, 0)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("path", RESOURCES)
@pytest.mark.parametrize("mode", MODES)
async def test_with_streaming_response(meter: Any, gateway: Any, llm: Any, mode: str, path: str,
                                       stream: bool) -> None:
    async def run() -> Any:
        cm = resource(client(llm, mode), path).with_streaming_response.create(**ARGS, stream=stream)
        async with enter(cm, mode) as response:
            parsed = await resolve(response.parse())
            return await drain(parsed) if stream else parsed

    with unmetered():
        base = await run()
    got = await run()
    assert norm(got) == norm(base)
    assert billed(gateway) == {"default": stream_units(got) if stream else units(got.usage)}
    s = stats()
    assert (s.calls_metered, s.events_estimated) == (1, 0)


# -- attribution and instrumentation ---------------------------------------------------------------

async def test_consumer_scope_attributes_the_call(meter: Any, gateway: Any, llm: Any) -> None:
    with am.consumer("usr_42"):
        msg = client(llm, "sync").messages.create(**ARGS)
    assert billed(gateway) == {"usr_42": units(msg.usage)}


def test_uninstrument_restores_exactly(meter: Any, gateway: Any, llm: Any) -> None:
    """Metering sits on the base client every call passes through; the resource methods are the
    SDK's own. ``uninstrument()`` puts the very same functions back; instrumenting twice wraps once."""
    from anthropic._base_client import AsyncAPIClient, SyncAPIClient
    from anthropic.resources.messages import messages as mod

    from aerostack_meter._wrapping import is_ours

    assert not is_ours(mod.Messages.__dict__["create"])
    owners = [SyncAPIClient, AsyncAPIClient]
    names = ("request", "_process_response")
    patched = {(o, n): o.__dict__[n] for o in owners for n in names}
    assert all(is_ours(fn) for fn in patched.values())
    assert all(not is_ours(fn.__wrapped__) for fn in patched.values())
    originals = {k: v.__wrapped__ for k, v in patched.items()}
    am.uninstrument()
    for key, fn in originals.items():
        assert key[0].__dict__.get(key[1]) is fn, key
    client(llm, "sync").messages.create(**ARGS)
    assert billed(gateway) == {}
    am.instrument(("anthropic",))
    assert {(o, n): o.__dict__[n] for o in owners for n in names} != patched  # wrapped anew
    assert all(is_ours(o.__dict__[n]) for o in owners for n in names)
    assert {(o, n): o.__dict__[n].__wrapped__ for o in owners for n in names} == originals
    am.instrument(("anthropic",))  # a second time is a no-op: wrapped once
    inner = SyncAPIClient.__dict__["request"]
    assert inner.__wrapped__ is originals[(SyncAPIClient, "request")]
    msg = client(llm, "sync").messages.create(**ARGS)
    assert billed(gateway) == {"default": units(msg.usage)}
