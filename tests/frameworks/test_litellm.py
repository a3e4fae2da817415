"""litellm: its openai/ route goes through the OpenAI SDK (metered there), its anthropic/ route
through litellm's own HTTP code (metered through litellm's callbacks); each call billed once."""

from __future__ import annotations

import time
from typing import Any

import pytest

import aerostack_meter as am

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
