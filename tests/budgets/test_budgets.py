"""Budgets: a call's worst case is reserved before it is sent (or the call is refused, unsent),
then settled to its usage; real SDK calls against the mock LLM server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

import aerostack_meter as am
from aerostack_meter.servers import start_mock_llm

from ..attribution._helpers import rows

HI = [{"role": "user", "content": "hi"}]  # estimated at 1 input token (2 characters)


@pytest.fixture
def slow_llm() -> Iterator[Any]:
    """A private mock server, so its request count is this test's alone."""
    handle = start_mock_llm()
    yield handle
    handle.stop()


def sent(mock: Any) -> int:
    return int(mock.stats()["requests"])


def test_a_call_that_does_not_fit_is_refused_before_it_is_sent(meter_factory: Any, gpt: openai.OpenAI,
                                                               mock_llm: Any) -> None:
    meter = meter_factory(budget=am.Budget(limits={"u": 150}))
    with am.consumer("u"):
        r = gpt.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=99)  # reserves 100
        assert r.usage is not None  # ended: the hold shrinks to its 14 tokens
        before = sent(mock_llm)
        with pytest.raises(am.BudgetExceededError) as info:
            gpt.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=140)
    assert sent(mock_llm) == before  # nothing reached the provider
    err = info.value
    assert isinstance(err, am.AerostackMeterError)
    assert (err.consumer, err.needed, err.remaining, err.unit) == ("u", 141, 150 - r.usage.total_tokens, "tokens")
    assert meter.stats().budget_refused == 1


def test_the_reservation_is_settled_to_the_actual_usage(meter_factory: Any, gateway: Any,
                                                        gpt: openai.OpenAI) -> None:
    budget = am.Budget(limits={"u": 1000})
    meter_factory(budget=budget)
    with am.consumer("u"):
        r = gpt.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=500)
    assert r.usage is not None
    assert rows(gateway) == {("u", "api_test", "tokens"): r.usage.total_tokens}  # flushed: settled
    assert budget.remaining("u") == 1000 - r.usage.total_tokens
    assert budget.remaining("nobody") is None  # no limit, no default: unlimited


def test_the_hold_at_the_calls_end_is_its_usage_even_past_the_worst_case(meter_factory: Any) -> None:
    """Until the reporter settles a call, its hold is its usage: less than the worst case (the
    hold shrinks), or more (a prompt longer than its estimate; output past ``max_tokens``): the
    hold grows, so a call checked before the reporter ran is not let through on the difference."""
    budget = am.Budget(limits={"more": 1000, "less": 1000})
    meter = meter_factory(budget=budget)
    kwargs = {"model": "gpt-4o-mini", "messages": HI, "max_tokens": 60}
    for consumer, used, output in (("more", 64, 60), ("less", 11, 10)):
        res = budget.reserve(meter, consumer, "openai", kwargs)
        assert res is not None
        assert budget.remaining(consumer) == 1000 - 61  # 1 input (estimated) + 60 output
        usage = am.Usage("openai", "gpt-4o-mini", used - output, output, used)
        res.hold(usage)
        assert budget.remaining(consumer) == 1000 - used
        res.settle_usage(usage)
        assert budget.remaining(consumer) == 1000 - used
        res.settle(0)  # settled once only
        assert budget.remaining(consumer) == 1000 - used


def test_a_failed_call_releases_its_reservation(meter_factory: Any, gpt: openai.OpenAI) -> None:
    budget = am.Budget(limits={"u": 1000})
    meter_factory(budget=budget)
    with am.consumer("u"), pytest.raises(openai.InternalServerError):
        gpt.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=500,
                                    extra_headers={"x-mock-error": "500"})
    assert budget.remaining("u") == 1000


def test_an_early_ended_stream_settles_to_its_estimate(meter_factory: Any, gateway: Any,
                                                       mock_llm: Any) -> None:
    budget = am.Budget(limits={"u": 10_000})
    meter_factory(budget=budget)
    client = anthropic.Anthropic(base_url=mock_llm.anthropic_base_url, api_key="x")
    with am.consumer("u"):
        stream = client.messages.create(model="claude-sonnet-4-5", max_tokens=2000, stream=True,
                                        messages=[{"role": "user", "content": "one two three"}],
                                        extra_headers={"x-mock-output-tokens": "50", "x-mock-chunks": "10"})
        for i, _ in enumerate(stream):
            if i == 3:
                break
        stream.close()
    billed = rows(gateway)[("u", "api_test", "tokens")]
    assert 0 < billed < 2000
    assert budget.remaining("u") == 10_000 - billed


def test_fifty_threads_against_ten_worst_cases_send_at_most_ten(meter_factory: Any, gateway: Any,
                                                                 slow_llm: Any) -> None:
    meter_factory(budget=am.Budget(limits={"u": 1000}))  # 10 calls of 1 + 99 tokens
    client = openai.OpenAI(base_url=slow_llm.url, api_key="x", max_retries=0)
    outcomes: list[str] = []
    start = threading.Barrier(50)

    def one() -> None:
        start.wait()
        with am.consumer("u"):
            try:
                client.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=99,
                                               extra_headers={"x-mock-latency-ms": "300"})
                outcomes.append("sent")
            except am.BudgetExceededError:
                outcomes.append("refused")

    threads = [threading.Thread(target=one) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(outcomes) == 50
    assert 1 <= outcomes.count("sent") <= 10
    assert sent(slow_llm) == outcomes.count("sent")
    assert rows(gateway)[("u", "api_test", "tokens")] <= 1000


async def test_fifty_tasks_against_ten_worst_cases_send_at_most_ten(meter_factory: Any, gateway: Any,
                                                                     slow_llm: Any) -> None:
    meter_factory(budget=am.Budget(limits={"u": 1000}))
    client = openai.AsyncOpenAI(base_url=slow_llm.url, api_key="x", max_retries=0)

    async def one() -> str:
        with am.consumer("u"):
            try:
                await client.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=99,
                                                     extra_headers={"x-mock-latency-ms": "300"})
                return "sent"
            except am.BudgetExceededError:
                return "refused"

    outcomes = await asyncio.gather(*(one() for _ in range(50)))
    assert 1 <= outcomes.count("sent") <= 10
    assert sent(slow_llm) == outcomes.count("sent")
    assert rows(gateway)[("u", "api_test", "tokens")] <= 1000


def test_a_balance_callable_is_cached_for_its_ttl(meter_factory: Any, gpt: openai.OpenAI) -> None:
    asked: list[str] = []

    def balance(consumer_id: str) -> int:
        asked.append(consumer_id)
        return 10_000

    meter_factory(budget=am.Budget.from_balance(balance, ttl=600))
    for who in ("a", "a", "b", "a"):
        with am.consumer(who):
            gpt.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=10)
    assert sorted(asked) == ["a", "b"]


def test_a_plain_callable_is_a_balance_budget(meter_factory: Any, gpt: openai.OpenAI, mock_llm: Any) -> None:
    meter_factory(budget=lambda consumer_id: 50)
    before = sent(mock_llm)
    with am.consumer("u"), pytest.raises(am.BudgetExceededError) as info:
        gpt.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=99)
    assert (info.value.needed, info.value.remaining) == (100, 50)
    assert sent(mock_llm) == before


def _broken(consumer_id: str) -> int:
    raise RuntimeError("wallet store down")


def test_a_failing_source_fails_open_by_default(meter_factory: Any, gpt: openai.OpenAI,
                                                caplog: pytest.LogCaptureFixture) -> None:
    meter = meter_factory(budget=am.Budget.from_balance(_broken))
    with am.consumer("u"):
        for _ in range(2):
            r = gpt.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=10)
            assert r.usage is not None
    assert meter.stats().budget_errors == 2
    assert sum("unbudgeted" in rec.getMessage() for rec in caplog.records) == 1


def test_a_failing_source_refuses_when_closed(meter_factory: Any, gpt: openai.OpenAI, mock_llm: Any) -> None:
    meter_factory(budget=am.Budget.from_balance(_broken), on_budget_error="closed")
    before = sent(mock_llm)
    with am.consumer("u"), pytest.raises(am.BudgetUnavailableError) as info:
        gpt.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=10)
    assert isinstance(info.value, am.BudgetExceededError) and info.value.remaining is None
    assert isinstance(info.value.__cause__, RuntimeError)
    assert sent(mock_llm) == before


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_a_slow_source_times_out_and_fails_closed(is_async: bool, meter_factory: Any, gpt: openai.OpenAI,
                                                        agpt: openai.AsyncOpenAI) -> None:
    """A lookup still running past ``timeout``: refused (closed), a ``TimeoutError`` its cause."""
    release = threading.Event()

    def slow(consumer_id: str) -> int:
        release.wait(30)
        return 10_000

    meter_factory(budget=am.Budget.from_balance(slow, timeout=0.2), on_budget_error="closed")
    try:
        with am.consumer("u"), pytest.raises(am.BudgetUnavailableError) as info:
            if is_async:
                await agpt.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=10)
            else:
                gpt.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=10)
        assert isinstance(info.value.__cause__, TimeoutError)
    finally:
        release.set()


async def test_async_callers_never_block_the_loop_on_a_lookup(meter_factory: Any,
                                                              agpt: openai.AsyncOpenAI) -> None:
    # The lookup only returns once another task on the same loop has run: a blocked loop deadlocks.
    ran = threading.Event()
    threads: list[str] = []

    def balance(consumer_id: str) -> int:
        threads.append(threading.current_thread().name)
        assert ran.wait(20), "the event loop was blocked during the lookup"
        return 10_000

    async def other_task() -> None:
        await asyncio.sleep(0.05)
        ran.set()

    meter_factory(budget=am.Budget.from_balance(balance, timeout=30))
    with am.consumer("u"):
        other = asyncio.create_task(other_task())
        r = await agpt.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=10)
        await other
    assert r.usage is not None
    assert threads and threads[0] != threading.current_thread().name


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_reads_the_balance_itself(meter_factory: Any, gpt: openai.OpenAI) -> None:
    # The parent's lookup is in flight when the process forks: in the child it never finishes
    # (its worker thread does not exist there), so the child must start its own.
    parent = os.getpid()
    asked, release = threading.Event(), threading.Event()

    def balance(consumer_id: str) -> int:
        if os.getpid() == parent:
            asked.set()
            release.wait(30)
        return 10_000

    meter_factory(budget=am.Budget.from_balance(balance, timeout=3), on_budget_error="closed")

    def call() -> None:
        with am.consumer("u"), contextlib.suppress(am.BudgetExceededError):
            gpt.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=10)

    waiting = threading.Thread(target=call)
    waiting.start()
    try:
        assert asked.wait(10)
        pid = os.fork()
        if pid == 0:  # the child
            code = 3
            try:
                with am.consumer("u"):
                    r = gpt.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=10)
                code = 0 if r.usage is not None else 4
            finally:
                os._exit(code)
    finally:
        release.set()
        waiting.join(30)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_wrap_budget_applies_to_that_client_only(meter_factory: Any, mock_llm: Any) -> None:
    meter_factory()
    plain = openai.OpenAI(base_url=mock_llm.url, api_key="x")
    limited = am.wrap(openai.OpenAI(base_url=mock_llm.url, api_key="x"), budget=am.Budget(default=50))
    with am.consumer("u"):
        plain.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=99)
        with pytest.raises(am.BudgetExceededError):
            limited.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=99)
        limited.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=40)


def test_without_max_tokens_the_models_output_limit_is_reserved(meter_factory: Any, gpt: openai.OpenAI) -> None:
    meter_factory(budget=am.Budget(limits={"u": 100_000}))
    with am.consumer("u"), pytest.raises(am.BudgetExceededError) as info:
        gpt.chat.completions.create(model="gpt-4o-mini", messages=HI)
    assert info.value.needed == 128_000  # gpt-4o-mini's context window bounds its output
    with am.consumer("u"):
        gpt.chat.completions.create(model="gpt-4o-mini", messages=HI, max_completion_tokens=1000)


def test_a_money_budget_reserves_the_priced_worst_case(meter_factory: Any, gateway: Any,
                                                       gpt: openai.OpenAI) -> None:
    # The worst case is priced at the model's dearest rates (any tier), so no tier can bill more.
    budget = am.Budget(limits={"u": 2000}, unit="cost")
    meter_factory(budget=budget, metrics="cost")
    with am.consumer("u"):
        gpt.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=100)
        with pytest.raises(am.BudgetExceededError) as info:
            gpt.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=5000)
    assert info.value.unit == "cost_micro_usd"
    billed = rows(gateway)[("u", "api_test", "cost_micro_usd")]
    assert budget.remaining("u") == 2000 - billed


def test_a_new_period_starts_every_consumer_again(meter_factory: Any, gpt: openai.OpenAI) -> None:
    import time

    budget = am.Budget(limits={"u": 1000}, period="day")
    meter_factory(budget=budget)
    with am.consumer("u"):
        r = gpt.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=50)
    assert r.usage is not None and budget.remaining("u") == 1000 - r.usage.total_tokens
    assert am.flush(10)  # settled (a call still in flight at midnight counts in the new day)
    with budget._lock:
        budget._roll(time.time() + 86_400)  # tomorrow (UTC): the day's spending is forgotten
    assert budget.remaining("u") == 1000
