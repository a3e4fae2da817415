"""LangChain chat models (langchain-openai, langchain-anthropic): models made before and after
``init()``, invoke and stream, sync and async: billed exactly, once, output unchanged."""

from __future__ import annotations

from typing import Any

import pytest

import aerostack_meter as am

from .conftest import USER, Run, served, unmetered

langchain_openai = pytest.importorskip("langchain_openai")
langchain_anthropic = pytest.importorskip("langchain_anthropic")

# langchain-openai caches its default async HTTP client process-wide: one event loop for the module.
pytestmark = pytest.mark.asyncio(loop_scope="module")


def _model(llm: Any, which: str) -> Any:
    if which == "openai":
        return langchain_openai.ChatOpenAI(model="gpt-mock", base_url=llm.url, api_key="k", max_retries=0)
    return langchain_anthropic.ChatAnthropic(model="claude-mock", base_url=llm.anthropic_base_url,
                                             api_key="k", max_tokens=32, max_retries=0)


async def _use(model: Any, how: str) -> Any:
    """What the app gets: the reply text and the usage LangChain reports."""
    if how == "invoke":
        msg = model.invoke(USER)
    elif how == "ainvoke":
        msg = await model.ainvoke(USER)
    elif how == "stream":
        msg = None
        for chunk in model.stream(USER):
            msg = chunk if msg is None else msg + chunk
    else:
        msg = None
        async for chunk in model.astream(USER):
            msg = chunk if msg is None else msg + chunk
    return msg.content, msg.usage_metadata


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("how", ["invoke", "ainvoke", "stream", "astream"])
@pytest.mark.parametrize("which", ["openai", "anthropic"])
async def test_billed_exactly_once_and_unchanged(run: Run, which: str, how: str, when: str) -> None:
    if when == "before":  # the model object (and its SDK client) made before init()
        model = _model(run.llm, which)
        run.init()
    else:
        run.init()
        model = _model(run.llm, which)
    before = served(run.llm)
    with am.consumer("lc"):
        got = await _use(model, how)
    reported = served(run.llm) - before
    assert reported > 0
    assert run.billed() == {"lc": reported}
    st = run.stats()
    assert (st.calls_metered, st.events_estimated, st.usage_missing, st.internal_errors) == (1, 0, 0, 0)
    unmetered()
    assert await _use(_model(run.llm, which), how) == got
