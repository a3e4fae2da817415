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


def test_a_gateway_budget_without_a_key_says_why_once(gpt: openai.OpenAI, tmp_path: Any,
                                                      caplog: pytest.LogCaptureFixture,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Apps that report through Redis have no billing key: the warning says the budget needs one,
    not an internal class name, and the call goes on (fail-open)."""
    from aerostack_meter import _log

    monkeypatch.delenv("AEROSTACK_API_KEY", raising=False)
    _log._reset_for_tests()
    meter = am.Meter(ledger_path=str(tmp_path / "l.db"), flush_interval=0.05, budget=am.Budget.gateway())
    try:
        client = am.wrap(gpt, meter=meter, consumer_id="u")
        for _ in range(2):
            assert client.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=5).usage
        assert meter.stats().budget_errors == 2
    finally:
        meter.shutdown(5)
    said = [r.getMessage() for r in caplog.records if "budget source failed" in r.getMessage()]
    assert len(said) == 1
    assert "billing API key" in said[0] and "_SourceError" not in said[0]


def test_a_gateway_refusing_the_key_is_said_without_the_key(meter_factory: Any, gpt: openai.OpenAI,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    secret = "ac_not_a_known_key_5f0e2d"
    meter = meter_factory(api_key=secret, budget=am.Budget.gateway())
    with am.consumer("u"):
        assert gpt.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=5).usage
    assert meter.stats().budget_errors == 1
    said = [r.getMessage() for r in caplog.records if "budget source failed" in r.getMessage()]
    assert len(said) == 1 and "HTTP 40" in said[0]
    assert all(secret not in r.getMessage() for r in caplog.records)


def test_an_unpriced_model_when_closed_is_refused_with_needed_0(meter_factory: Any, mock_llm: Any,
                                                                gpt: openai.OpenAI) -> None:
    """A money budget cannot price a model with no price: its worst case is unknown, said as
    needed=0 and remaining=None (docs/budgets.md, Errors), and nothing is sent."""
    meter_factory(budget=am.Budget(limits={"u": 10**9}, unit="cost"), on_budget_error="closed")
    before = int(mock_llm.stats()["requests"])
    with am.consumer("u"), pytest.raises(am.BudgetUnavailableError) as info:
        gpt.chat.completions.create(model="no-such-model-x1", messages=HI, max_tokens=5)
    assert (info.value.needed, info.value.remaining, info.value.unit) == (0, None, "cost_micro_usd")
    assert "no price" in str(info.value)
    assert int(mock_llm.stats()["requests"]) == before
