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
