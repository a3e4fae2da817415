"""litellm: its openai/ route goes through the OpenAI SDK (metered there), its anthropic/ route
through litellm's own HTTP code (metered through litellm's callbacks); each call billed once."""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

import pytest

import aerostack_meter as am
from aerostack_meter._estimate import estimate_input_tokens

from .conftest import USER, Run, served, unmetered

litellm = pytest.importorskip("litellm")

MESSAGES = [{"role": "user", "content": USER}]


def _route(llm: Any, route: str) -> dict[str, Any]:
    if route == "openai":
        return {"model": "openai/gpt-mock", "api_base": llm.url, "api_key": "k"}
    return {"model": "anthropic/claude-mock", "api_base": llm.anthropic_base_url, "api_key": "k",
            "max_tokens": 32}


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("route", ["openai", "anthropic"])
async def test_completion_billed_once_and_unchanged(run: Run, mode: str, route: str) -> None:
    run.init()
    before = served(run.llm)
    with am.consumer("c1"):
        if mode == "async":
            r = await litellm.acompletion(messages=MESSAGES, **_route(run.llm, route))
        else:
            r = litellm.completion(messages=MESSAGES, **_route(run.llm, route))
    assert r.usage.total_tokens == served(run.llm) - before > 0
    await run.settle(1)
    assert run.billed() == {"c1": r.usage.total_tokens}
    st = run.stats()
    assert (st.calls_metered, st.events_estimated, st.usage_missing, st.internal_errors) == (1, 0, 0, 0)
    unmetered()
    plain = litellm.completion(messages=MESSAGES, **_route(run.llm, route))
    assert plain.choices[0].message.content == r.choices[0].message.content
    assert plain.usage.total_tokens == r.usage.total_tokens


@pytest.mark.parametrize("route", ["openai", "anthropic"])
def test_streaming_billed_once(run: Run, route: str) -> None:
    run.init()
    before = served(run.llm)
    with am.consumer("c1"):
        chunks = list(litellm.completion(messages=MESSAGES, stream=True,
                                         stream_options={"include_usage": True}, **_route(run.llm, route)))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert run.billed(calls=1) == {"c1": served(run.llm) - before}  # the usage the server reported, once
    st = run.stats()
    assert (st.calls_metered, st.usage_missing, st.internal_errors) == (1, 0, 0)
    assert st.events_estimated == 0


def test_nothing_billed_after_uninstrument(run: Run) -> None:
    run.init()
    unmetered()
    assert all(type(cb).__name__ != "AerostackMeterLogger" for cb in litellm.callbacks)
    with am.consumer("c1"):
        litellm.completion(messages=MESSAGES, **_route(run.llm, "anthropic"))
    time.sleep(0.5)  # litellm's worker would have reported it by now
    assert run.billed() == {}


async def _collect(calls: int) -> None:
    """Collect garbage until ``calls`` calls are metered: litellm's workers hold a dropped stream
    until they have logged the chunks it handed out."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        gc.collect()
        st = am.stats()
        if st.calls_metered + st.usage_missing >= calls:
            return
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_dropped_stream_billed_from_an_estimate(run: Run, mode: str) -> None:
    """litellm calls no callback for a stream dropped before its end (anthropic/: its own HTTP
    code): the call is billed once, from an estimate of what was sent and what was read."""
    run.init()
    kw = {"messages": MESSAGES, "stream": True, **_route(run.llm, "anthropic")}
    text = ""
    with am.consumer("c1"):
        if mode == "async":
            stream = await litellm.acompletion(**kw)
            async for chunk in stream:
                text += chunk.choices[0].delta.content or ""
                break
        else:
            stream = litellm.completion(**kw)
            for chunk in stream:
                text += chunk.choices[0].delta.content or ""
                break
    assert text
    assert not run.billed()  # nothing until the stream is collected
    del stream, chunk
    await _collect(1)
    st = run.stats()
    assert (st.calls_metered, st.events_estimated, st.usage_missing, st.internal_errors) == (1, 1, 0, 0)
    # a sync stream's chunks reach litellm's stream-event callback: the text read is estimated
    # too (an async stream's reach no callback: its estimate has the input only)
    read = -(-len(text) // 4) if mode == "sync" else 0
    assert run.billed() == {"c1": estimate_input_tokens({"input": MESSAGES}) + read}


async def test_dropped_stream_through_the_sdk_billed_once(run: Run) -> None:
    """openai/ goes through the OpenAI SDK, whose stream proxy estimates a dropped stream: the
    litellm callback does not bill it a second time."""
    run.init()
    with am.consumer("c1"):
        stream = litellm.completion(messages=MESSAGES, stream=True, **_route(run.llm, "openai"))
        next(iter(stream))
    del stream
    await _collect(1)
    await asyncio.sleep(0.3)  # a second bill would come from litellm's worker
    gc.collect()
    assert set(run.billed()) == {"c1"}
    st = run.stats()
    assert (st.calls_metered, st.events_estimated, st.usage_missing, st.internal_errors) == (1, 1, 0, 0)


def test_completed_stream_then_collected_billed_once_exactly(run: Run) -> None:
    run.init()
    before = served(run.llm)
    with am.consumer("c1"):
        stream = litellm.completion(messages=MESSAGES, stream=True, stream_options={"include_usage": True},
                                    **_route(run.llm, "anthropic"))
        list(stream)
    assert run.billed(calls=1) == {"c1": served(run.llm) - before}
    del stream
    gc.collect()
    assert run.billed() == {"c1": served(run.llm) - before}
    st = run.stats()
    assert (st.calls_metered, st.events_estimated, st.usage_missing) == (1, 0, 0)


def test_evicted_pending_call_counted(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past ``_MAX_PENDING`` calls in flight, the oldest is estimated (counted), and billed once
    even when litellm reports its end later."""
    from aerostack_meter.providers import litellm as provider

    monkeypatch.setattr(provider, "_MAX_PENDING", 1)
    run.init()
    with am.consumer("c1"):
        first = litellm.completion(messages=MESSAGES, stream=True, **_route(run.llm, "anthropic"))
    with am.consumer("c2"):
        second = litellm.completion(messages=MESSAGES, **_route(run.llm, "anthropic"))
    list(first)  # litellm now reports the first call's end: it was billed already
    assert set(run.billed(calls=2)) == {"c1", "c2"}
    assert run.billed()["c2"] == second.usage.total_tokens
    time.sleep(0.3)
    st = run.stats()
    assert (st.calls_metered, st.events_estimated, st.usage_missing, st.internal_errors) == (2, 1, 0, 0)


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_stream_cut_mid_answer_billed_from_an_estimate(run: Run, mode: str) -> None:
    """The connection drops after two chunks (anthropic/: litellm's own HTTP code raises
    ``MidStreamFallbackError``; its failure callback gets the dropped connection): billed once,
    from an estimate of what was sent and what was read, never nothing and never uncounted."""
    run.init()
    kw = {"messages": MESSAGES, "stream": True, "num_retries": 0,
          "extra_headers": {"x-mock-stream-error-after": "2"}, **_route(run.llm, "anthropic")}
    text = ""
    with am.consumer("c1"), pytest.raises(Exception) as raised:
        if mode == "async":
            async for chunk in await litellm.acompletion(**kw):
                text += chunk.choices[0].delta.content or ""
        else:
            for chunk in litellm.completion(**kw):
                text += chunk.choices[0].delta.content or ""
    assert type(raised.value).__name__ == "MidStreamFallbackError"
    assert text  # the user got part of the answer: the provider charged for it
    await run.settle(1)
    st = run.stats()
    assert (st.calls_metered, st.events_estimated, st.usage_missing, st.internal_errors) == (1, 1, 0, 0)
    billed = run.billed()
    inp = estimate_input_tokens({"input": MESSAGES})
    # (the text read reaches the estimate only where litellm's worker logged its chunks first)
    assert set(billed) == {"c1"} and inp <= billed["c1"] <= inp + -(-len(text) // 4), (billed, inp, text)


def test_an_error_the_provider_answered_bills_nothing(run: Run) -> None:
    run.init()
    with am.consumer("c1"), pytest.raises(Exception) as raised:
        litellm.completion(messages=MESSAGES, num_retries=0, extra_headers={"x-mock-error": "400"},
                           **_route(run.llm, "anthropic"))
    assert getattr(raised.value, "status_code", None) == 400
    time.sleep(0.3)  # litellm's worker reports the failure
    st = run.stats()
    assert (st.calls_metered, st.events_estimated, st.usage_missing, st.internal_errors) == (0, 0, 0, 0)
    assert run.billed() == {}
