"""The OpenAI Agents SDK over HTTP (chat completions and responses models): runs made with a
client created before and after ``init()``, streamed and not: billed exactly what the run's own
usage says, once, output unchanged."""

from __future__ import annotations

from typing import Any

import pytest

import aerostack_meter as am

from .conftest import USER, Run, served, unmetered

agents = pytest.importorskip("agents")
openai = pytest.importorskip("openai")

agents.set_tracing_disabled(True)


def _agent(llm: Any, api: str) -> Any:
    client = openai.AsyncOpenAI(base_url=llm.url, api_key="k", max_retries=0)
    if api == "chat":
        model = agents.OpenAIChatCompletionsModel(model="gpt-mock", openai_client=client)
    else:
        model = agents.OpenAIResponsesModel(model="gpt-mock", openai_client=client)
    return agents.Agent(name="harbour", instructions="Answer briefly.", model=model)


async def _run(agent: Any, streamed: bool) -> tuple[Any, int]:
    if streamed:
        result = agents.Runner.run_streamed(agent, USER)
        async for _ in result.stream_events():
            pass
    else:
        result = await agents.Runner.run(agent, USER)
    return result.final_output, result.context_wrapper.usage.total_tokens


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("streamed", [False, True])
@pytest.mark.parametrize("api", ["chat", "responses"])
async def test_billed_exactly_once_and_unchanged(run: Run, api: str, streamed: bool, when: str) -> None:
    if when == "before":
        agent = _agent(run.llm, api)
        run.init()
    else:
        run.init()
        agent = _agent(run.llm, api)
    before = served(run.llm)
    with am.consumer("ag"):
        output, total = await _run(agent, streamed)
    reported = served(run.llm) - before
    assert reported > 0
    # A streamed chat run does not ask for usage (the run's own tally is 0): the meter asked for it,
    # hid the extra chunk, and bills what the server reported.
    assert total == (0 if api == "chat" and streamed else reported)
    assert run.billed() == {"ag": reported}
    st = run.stats()
    assert (st.events_estimated, st.usage_missing, st.internal_errors) == (0, 0, 0)
    unmetered()
    assert await _run(_agent(run.llm, api), streamed) == (output, total)
