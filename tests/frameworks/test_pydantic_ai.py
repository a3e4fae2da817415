"""pydantic-ai (pydantic-ai-slim[openai]): an ``Agent`` on an OpenAI chat model whose provider points
at the mock, made before and after ``init()``; ``run_sync`` and ``run_stream``: billed exactly,
once, output (text and the usage pydantic-ai reports) unchanged."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import aerostack_meter as am

from .conftest import USER, Run, served, unmetered

pydantic_ai = pytest.importorskip("pydantic_ai")
pai_openai = pytest.importorskip("pydantic_ai.models.openai")
pai_provider = pytest.importorskip("pydantic_ai.providers.openai")


def _agent(llm: Any) -> Any:
    provider = pai_provider.OpenAIProvider(base_url=llm.url, api_key="k")
    return pydantic_ai.Agent(pai_openai.OpenAIChatModel("gpt-mock", provider=provider))


def _tokens(result: Any) -> tuple[int, int]:
    """The tokens pydantic-ai counted (``usage`` is a method in 1.x, a property since 2.x)."""
    usage = result.usage() if callable(result.usage) else result.usage
    return usage.input_tokens, usage.output_tokens


def _use(agent: Any, how: str) -> Any:
    """What the app gets: the output text and the tokens pydantic-ai counted. ``run_sync`` runs
    its own event loop, so the test is synchronous and the stream runs in ``asyncio.run``."""
    if how == "run_sync":
        result = agent.run_sync(USER)
        return result.output, *_tokens(result)

    async def stream() -> Any:
        async with agent.run_stream(USER) as streamed:
            output = await streamed.get_output()
        return output, *_tokens(streamed)

    return asyncio.run(stream())


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("how", ["run_sync", "run_stream"])
def test_billed_exactly_once_and_unchanged(run: Run, how: str, when: str) -> None:
    if when == "before":  # the agent (and its provider's SDK client) made before init()
        agent = _agent(run.llm)
        run.init()
    else:
        run.init()
        agent = _agent(run.llm)
    before = served(run.llm)
    with am.consumer("pai"):
        got = _use(agent, how)
    reported = served(run.llm) - before
    assert reported > 0 and got[0]
    assert run.billed() == {"pai": reported}
    st = run.stats()
    assert (st.calls_metered, st.events_estimated, st.usage_missing, st.internal_errors) == (1, 0, 0, 0)
    unmetered()
    assert _use(_agent(run.llm), how) == got
