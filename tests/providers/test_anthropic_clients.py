"""Anthropic clients: the ``wrap()`` proxy (alone and on top of the patches: counted once), and
the Bedrock and Vertex clients, which share the resource classes (their beta classes are
patched on their own)."""

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
    forwarding_http_client,
    norm,
    resolve,
    stats,
    stream_units,
    units,
)


async def _every_surface(c: Any, mode: str) -> tuple[int, int]:
    """Use each metered surface of client ``c`` once; returns (calls, expected units)."""
    total = 0
    msg = await resolve(c.messages.create(**ARGS))
    total += units(msg.usage)
    total += stream_units(await drain(await resolve(c.messages.create(**ARGS, stream=True))))
    async with enter(c.messages.stream(**ARGS), mode) as s:
        total += units((await resolve(s.get_final_message())).usage)
    async with enter(c.beta.messages.stream(**ARGS), mode) as s:
        total += units((await resolve(s.get_final_message())).usage)
    total += units((await resolve(c.beta.messages.create(**ARGS))).usage)
    raw = await resolve(c.messages.with_raw_response.create(**ARGS))
    total += units((await resolve(raw.parse())).usage)
    raw = await resolve(c.with_raw_response.beta.messages.create(**ARGS))
    total += units((await resolve(raw.parse())).usage)
    async with enter(c.messages.with_streaming_response.create(**ARGS, stream=True), mode) as r:
        total += stream_units(await drain(await resolve(r.parse())))
    async with enter(c.with_streaming_response.messages.create(**ARGS), mode) as r:
        total += units((await resolve(r.parse())).usage)
    total += units((await resolve(c.with_options(timeout=30).messages.create(**ARGS))).usage)
    total += units((await resolve(c.copy().messages.create(**ARGS))).usage)
    posted = await resolve(c.post("/v1/messages", body=ARGS, cast_to=anthropic.types.Message))
    total += units(posted.usage)  # the client's own request method
    await resolve(c.messages.count_tokens(model="m", messages=USER))  # never metered
    return 12, total


@pytest.mark.parametrize("mode", MODES)
async def test_wrap_meters_every_surface_of_one_client(meter_factory: Any, gateway: Any, mock_llm: Any,
                                                       mode: str) -> None:
    meter_factory(instrument=False)  # no patches: only the proxy meters
    plain = client(mock_llm, mode)
    wrapped = am.wrap(plain, consumer_id="acme")
    assert isinstance(wrapped, type(plain))
    calls, total = await _every_surface(wrapped, mode)
    await resolve(plain.messages.create(**ARGS))  # the client itself stays unmetered
    assert billed(gateway) == {"acme": total}
    s = stats()
    assert (s.calls_metered, s.events_estimated, s.usage_missing) == (calls, 0, 0)


@pytest.mark.parametrize("mode", MODES)
async def test_wrap_on_top_of_patches_counts_once(meter: Any, gateway: Any, mock_llm: Any, mode: str) -> None:
    wrapped = am.wrap(client(mock_llm, mode), consumer_id="acme")
    calls, total = await _every_surface(wrapped, mode)
    assert billed(gateway) == {"acme": total}  # the outer (proxy) wrapper attributes; the patch defers
    assert stats().calls_metered == calls


@pytest.mark.parametrize("mode", MODES)
async def test_patched_client_meters_every_surface(meter: Any, gateway: Any, mock_llm: Any, mode: str) -> None:
    calls, total = await _every_surface(client(mock_llm, mode), mode)
    assert billed(gateway) == {"default": total}
    assert stats().calls_metered == calls


# -- Vertex and Bedrock ---------------------------------------------------------------------------

def _vertex(mock_llm: Any, mode: str) -> tuple[Any, list[str]]:
    http, seen = forwarding_http_client(mock_llm, mode)
    cls = anthropic.AsyncAnthropicVertex if mode == "async" else anthropic.AnthropicVertex
    return cls(region="us-east5", project_id="proj", access_token="token", http_client=http,
               base_url="http://vertex.invalid/v1", max_retries=0), seen


def _bedrock(mock_llm: Any, mode: str) -> tuple[Any, list[str]]:
    http, seen = forwarding_http_client(mock_llm, mode)
    cls = anthropic.AsyncAnthropicBedrock if mode == "async" else anthropic.AnthropicBedrock
    return cls(api_key="key", aws_region="us-east-1", http_client=http,
               base_url="http://bedrock.invalid", max_retries=0), seen


@pytest.mark.parametrize("mode", MODES)
async def test_vertex_client_is_metered(meter: Any, gateway: Any, mock_llm: Any, mode: str) -> None:
    c, seen = _vertex(mock_llm, mode)
    total = units((await resolve(c.messages.create(**ARGS))).usage)
    total += units((await resolve(c.beta.messages.create(**ARGS))).usage)
    events = await drain(await resolve(c.messages.create(**ARGS, stream=True)))
    total += stream_units(events)
    async with enter(c.messages.stream(**ARGS), mode) as s:
        total += units((await resolve(s.get_final_message())).usage)
    async with enter(c.beta.messages.stream(**ARGS), mode) as s:
        total += units((await resolve(s.get_final_message())).usage)
    raw = await resolve(c.beta.messages.with_raw_response.create(**ARGS))
    total += units((await resolve(raw.parse())).usage)
    await resolve(c.messages.count_tokens(model="claude-mock", messages=USER))  # never metered
    assert any(p.endswith(":rawPredict") for p in seen) and any(p.endswith(":streamRawPredict") for p in seen)
    assert all("/projects/proj/locations/us-east5/" in p for p in seen)
    assert billed(gateway) == {"default": total}
    s = stats()
    assert (s.calls_metered, s.events_estimated, s.usage_missing) == (6, 0, 0)


@pytest.mark.parametrize("mode", MODES)
async def test_vertex_response_matches_unmetered(meter: Any, gateway: Any, mock_llm: Any, mode: str) -> None:
    am.uninstrument()
    base = await resolve(_vertex(mock_llm, mode)[0].beta.messages.create(**ARGS))
    am.instrument(("anthropic",))
    msg = await resolve(_vertex(mock_llm, mode)[0].beta.messages.create(**ARGS))
    assert norm(msg) == norm(base)
    assert billed(gateway) == {"default": units(msg.usage)}


@pytest.mark.parametrize("mode", MODES)
async def test_bedrock_client_is_metered(meter: Any, gateway: Any, mock_llm: Any, mode: str) -> None:
    c, seen = _bedrock(mock_llm, mode)
    total = units((await resolve(c.messages.create(**ARGS))).usage)
    total += units((await resolve(c.beta.messages.create(**ARGS))).usage)
    # Bedrock streams are AWS event streams (and need botocore): not forwardable to the SSE mock
    assert seen == ["/model/claude-mock/invoke"] * 2
    assert billed(gateway) == {"default": total}
    assert stats().calls_metered == 2

def test_wrap_accepts_vertex_and_bedrock(meter_factory: Any, gateway: Any, mock_llm: Any) -> None:
    meter_factory(instrument=False)
    total = 0
    for make in (_vertex, _bedrock):
        c = am.wrap(make(mock_llm, "sync")[0], consumer_id="cloud")
        total += units(c.messages.create(**ARGS).usage) + units(c.beta.messages.create(**ARGS).usage)
    assert billed(gateway) == {"cloud": total}
    assert stats().calls_metered == 4


@pytest.mark.parametrize("stream", [False, True])
def test_tool_runner_calls_are_metered(meter: Any, gateway: Any, mock_llm: Any, stream: bool) -> None:
    """Tool runners (and 2.x threads) call the patched beta methods on the real client."""
    from anthropic import beta_tool

    @beta_tool
    def weather(city: str) -> str:
        """The weather in a city."""
        return "sunny"

    runner = client(mock_llm, "sync").beta.messages.tool_runner(**ARGS, tools=[weather], stream=stream)
    finals = []
    for item in runner:
        finals.append(item.get_final_message() if stream else item)
    assert len(finals) == 1  # the mock answers with text: one turn
    assert billed(gateway) == {"default": units(finals[0].usage)}
    s = stats()
    assert (s.calls_metered, s.events_estimated) == (1, 0)


@pytest.mark.parametrize("stream", [False, True])
def test_tool_runner_and_thread_calls_through_wrap_alone_are_metered(meter_factory: Any, gateway: Any,
                                                                     mock_llm: Any, stream: bool) -> None:
    """With ``wrap()`` alone (no patches), a tool runner's and a thread's calls go through the
    resource's ``_client``: they are metered with the proxy's defaults, the client itself not."""
    from anthropic import beta_tool

    meter_factory(instrument=False)
    plain = client(mock_llm, "sync")
    wrapped = am.wrap(plain, consumer_id="acme")

    @beta_tool
    def weather(city: str) -> str:
        """The weather in a city."""
        return "sunny"

    finals = [item.get_final_message() if stream else item
              for item in wrapped.beta.messages.tool_runner(**ARGS, tools=[weather], stream=stream)]
    assert len(finals) == 1
    total, calls = units(finals[0].usage), 1
    if hasattr(plain.beta.messages, "thread"):  # 2.x: a thread's turns
        thread = wrapped.beta.messages.thread(max_tokens=ARGS["max_tokens"], model=ARGS["model"])
        total += units(thread.send(*ARGS["messages"]).usage)
        calls += 1
    plain.beta.messages.tool_runner(**ARGS, tools=[weather]).until_done()  # the client itself: unmetered
    assert billed(gateway) == {"acme": total}
    s = stats()
    assert (s.calls_metered, s.events_estimated, s.usage_missing) == (calls, 0, 0)
