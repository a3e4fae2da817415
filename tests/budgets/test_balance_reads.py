"""Balance sources seen from async callers and from apps without a billing key: one read per
call, the source's exception kept, the reason of a failure said once; real SDK calls against the
mock LLM server."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import openai
import pytest

import aerostack_meter as am

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def agpt(mock_llm: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=mock_llm.url, api_key="x", max_retries=0)


@pytest.fixture
def gpt(mock_llm: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=mock_llm.url, api_key="x", max_retries=0)


async def test_an_async_call_with_ttl_0_reads_the_balance_once(meter_factory: Any,
                                                                agpt: openai.AsyncOpenAI) -> None:
    """The prefetched balance serves the reserve that follows it: no second lookup per call."""
    reads: list[str] = []
    lock = threading.Lock()

    def balance(consumer_id: str) -> int:
        with lock:
            reads.append(consumer_id)
        return 1_000_000

    meter_factory(budget=am.Budget.from_balance(balance, ttl=0))
    with am.consumer("u"):
        for _ in range(4):
            await agpt.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=5)
    await asyncio.sleep(0.3)  # a stray lookup started by a reserve would land by now
    assert reads == ["u"] * 4


def test_a_sync_call_with_ttl_0_reads_the_balance_once(meter_factory: Any, gpt: openai.OpenAI) -> None:
    reads: list[str] = []
    meter_factory(budget=am.Budget.from_balance(lambda c: reads.append(c) or 1_000_000, ttl=0))
    with am.consumer("u"):
        for _ in range(3):
            gpt.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=5)
    assert reads == ["u"] * 3


def _broken(consumer_id: str) -> int:
    raise RuntimeError("wallet store down")


async def test_an_async_refusal_when_closed_keeps_the_sources_exception(meter_factory: Any, mock_llm: Any,
                                                                        agpt: openai.AsyncOpenAI) -> None:
    meter_factory(budget=am.Budget.from_balance(_broken), on_budget_error="closed")
    before = int(mock_llm.stats()["requests"])
    with am.consumer("u"), pytest.raises(am.BudgetUnavailableError) as info:
        await agpt.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=10)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert str(info.value.__cause__) == "wallet store down"
    assert int(mock_llm.stats()["requests"]) == before


async def test_an_async_lookup_timeout_when_closed_is_the_cause(meter_factory: Any,
                                                                agpt: openai.AsyncOpenAI) -> None:
    release = threading.Event()

    def slow(consumer_id: str) -> int:
        release.wait(30)
        return 10_000

    meter_factory(budget=am.Budget.from_balance(slow, timeout=0.2), on_budget_error="closed")
    try:
        with am.consumer("u"), pytest.raises(am.BudgetUnavailableError) as info:
            await agpt.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=10)
        assert isinstance(info.value.__cause__, TimeoutError)
    finally:
        release.set()
