"""LlamaIndex (llama-index-llms-openai): its ``OpenAI`` LLM pointed at the mock with ``api_base``,
made before and after ``init()``; chat and stream_chat, sync and async: billed exactly, once,
output unchanged."""

from __future__ import annotations

from typing import Any

import pytest

import aerostack_meter as am

from .conftest import USER, Run, served, unmetered

li_openai = pytest.importorskip("llama_index.llms.openai")
li_llms = pytest.importorskip("llama_index.core.llms")


def _model(llm: Any) -> Any:
    # A model name LlamaIndex knows (it looks up the context window; the mock serves any name).
    return li_openai.OpenAI(model="gpt-4o-mini", api_base=llm.url, api_key="k", max_retries=0)


async def _use(model: Any, how: str) -> Any:
    """What the app gets: the reply's role and text (streamed: the deltas, in order, too)."""
    messages = [li_llms.ChatMessage(role="user", content=USER)]
    if how == "chat":
        resp = model.chat(messages)
        return str(resp.message.role), resp.message.content
    if how == "achat":
        resp = await model.achat(messages)
        return str(resp.message.role), resp.message.content
    if how == "stream_chat":
        chunks = list(model.stream_chat(messages))
    else:
        chunks = [chunk async for chunk in await model.astream_chat(messages)]
    last = chunks[-1].message
    return str(last.role), last.content, [chunk.delta for chunk in chunks]


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("how", ["chat", "achat", "stream_chat", "astream_chat"])
async def test_billed_exactly_once_and_unchanged(run: Run, how: str, when: str) -> None:
    if when == "before":  # the LLM object made before init()
        model = _model(run.llm)
        run.init()
    else:
        run.init()
        model = _model(run.llm)
    before = served(run.llm)
    with am.consumer("li"):
        got = await _use(model, how)
    reported = served(run.llm) - before
    assert reported > 0 and got[1]
    assert run.billed() == {"li": reported}
    st = run.stats()
    assert (st.calls_metered, st.events_estimated, st.usage_missing, st.internal_errors) == (1, 0, 0, 0)
    unmetered()
    assert await _use(_model(run.llm), how) == got
