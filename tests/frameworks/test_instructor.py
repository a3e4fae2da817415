"""instructor: ``instructor.from_openai(client)`` with the client made before ``init()`` (billed 0
of 72 tokens before issue 18). The mock's reply is not the structured output asked for, so every
attempt fails validation: each attempt is billed exactly, and the app gets instructor's own error."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

import aerostack_meter as am

from .conftest import USER, Run, served, unmetered

instructor = pytest.importorskip("instructor")
openai = pytest.importorskip("openai")


class Harbour(pydantic.BaseModel):
    name: str
    population: int


def _client(llm: Any, mode: str) -> Any:
    cls = openai.AsyncOpenAI if mode == "async" else openai.OpenAI
    return instructor.from_openai(cls(base_url=llm.url, api_key="k", max_retries=0))


async def _ask(client: Any, mode: str) -> str:
    """What the app gets: instructor's exception (its type), after its retries."""
    try:
        result = client.chat.completions.create(model="gpt-mock", response_model=Harbour, max_retries=2,
                                                messages=[{"role": "user", "content": USER}])
        if mode == "async":
            await result
    except Exception as exc:  # the mock's words are no Harbour
        return type(exc).__name__
    return "no error"


@pytest.mark.parametrize("when", ["before", "after"])
@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_every_attempt_billed_exactly(run: Run, mode: str, when: str) -> None:
    if when == "before":
        client = _client(run.llm, mode)
        run.init()
    else:
        run.init()
        client = _client(run.llm, mode)
    before = served(run.llm)
    with am.consumer("in"):
        got = await _ask(client, mode)
    reported = served(run.llm) - before
    assert got != "no error" and reported > 0
    assert run.billed() == {"in": reported}
    st = run.stats()
    assert st.calls_metered >= 2 and (st.events_estimated, st.usage_missing, st.internal_errors) == (0, 0, 0)
    unmetered()
    before = served(run.llm)
    assert await _ask(_client(run.llm, mode), mode) == got
    assert served(run.llm) - before == reported  # the same attempts, unmetered
