"""``consumer()`` scopes: context manager, async context manager, decorators, nesting, exceptions,
asyncio tasks, ``asyncio.to_thread``, thread pools with and without ``carry_consumer``."""

from __future__ import annotations

import asyncio
import gc
import inspect
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest

import aerostack_meter as am
from tests.conftest import billed

from ._helpers import chat


@pytest.fixture
def client(mock_llm: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=mock_llm.url, api_key="x")


def test_context_manager_sets_and_restores() -> None:
    assert am.current_consumer() is None
    with am.consumer("alice") as scope:
        assert am.current_consumer() == "alice"
        assert scope.consumer_id == "alice"
    assert am.current_consumer() is None


def test_nesting_innermost_wins_and_exceptions_restore(meter: am.Meter, gateway: Any,
                                                       client: openai.OpenAI) -> None:
    expected: dict[str, int] = {}
    with am.consumer("outer"):
        expected["outer"] = chat(client, 3)
        with pytest.raises(RuntimeError, match="boom"), am.consumer("inner"):
            assert am.current_consumer() == "inner"
            expected["inner"] = chat(client, 4)
            with am.consumer("innermost"):
                expected["innermost"] = chat(client, 5)
            assert am.current_consumer() == "inner"
            raise RuntimeError("boom")
        assert am.current_consumer() == "outer"
        expected["outer"] += chat(client, 6)
    assert am.current_consumer() == "default"
    expected["default"] = chat(client, 7)
    assert billed(gateway) == expected


def test_same_object_reentered_restores_each_level() -> None:
    scope = am.consumer("a")
    with scope, am.consumer("b"), scope:
        assert am.current_consumer() == "a"
    assert am.current_consumer() is None


def test_one_consumer_object_shared_by_concurrent_tasks_and_threads() -> None:
    """A module-level ``consumer`` constant entered concurrently: each task/thread restores its own."""
    shared = am.consumer("shared")

    async def task(i: int) -> str | None:
        with am.consumer(f"own{i}"):
            async with shared:
                await asyncio.sleep(0.001 * (i % 4))
                assert am.current_consumer() == "shared"
            return am.current_consumer()

    async def main() -> list[str | None]:
        return await asyncio.gather(*(task(i) for i in range(20)))

    assert asyncio.run(main()) == [f"own{i}" for i in range(20)]

    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def thread() -> None:
        try:
            with shared:
                barrier.wait(5)
                assert am.current_consumer() == "shared"
            assert am.current_consumer() is None
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=thread) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


async def test_async_context_manager_tasks_and_exceptions() -> None:
    async def child() -> str | None:
        seen = am.current_consumer()  # inherited from where the task was created
        with am.consumer("child"):
            await asyncio.sleep(0)
        return seen

    async with am.consumer("parent"):
        task = asyncio.create_task(child())
        with am.consumer("changed-after-create"):
            await asyncio.sleep(0)
        assert await task == "parent"
        assert am.current_consumer() == "parent"  # the child's scope never leaks out
        with pytest.raises(KeyError):
            async with am.consumer("failing"):
                raise KeyError("x")
        assert am.current_consumer() == "parent"
    assert am.current_consumer() is None


async def test_decorators_sync_and_async(meter: am.Meter, gateway: Any, client: openai.OpenAI,
                                         mock_llm: Any) -> None:
    aclient = openai.AsyncOpenAI(base_url=mock_llm.url, api_key="x")

    @am.consumer("sync_user")
    def handler(n: int) -> int:
        """Docstring kept."""
        assert am.current_consumer() == "sync_user"
        return chat(client, n)

    @am.consumer("async_user", api_id="api_other")
    async def ahandler(n: int) -> int:
        r = await aclient.chat.completions.create(model="m", messages=[{"role": "user", "content": "x " * n}])
        assert r.usage is not None
        return r.usage.total_tokens

    @am.consumer("failing_user")
    async def failing() -> None:
        raise ValueError("no")

    assert handler.__name__ == "handler" and handler.__doc__ == "Docstring kept."
    assert inspect.iscoroutinefunction(ahandler)
    with am.consumer("caller"):
        sync_units = handler(4)
        async_units = await ahandler(6)
        with pytest.raises(ValueError):
            await failing()
        assert am.current_consumer() == "caller"
    assert am.current_consumer() == "default"
    assert am.flush(10)
    rows = {(r["consumerId"], r["apiId"]): r["units"] for r in gateway.client.totals()}
    assert rows == {("sync_user", "api_test"): sync_units, ("async_user", "api_other"): async_units}
    await aclient.close()


def test_decorated_generators_read_in_step_bill_each_their_own(meter: am.Meter, gateway: Any,
                                                               client: openai.OpenAI) -> None:
    """Two users' answers streamed side by side (``zip``), and the iterating code's own call: a
    decorated generator has its scope only while its own code runs, never across a ``yield``."""
    expected: dict[str, int] = {}

    def answer(user: str) -> Any:
        @am.consumer(user)
        def steps() -> Any:
            for n in (2, 3, 4):
                units = chat(client, n)
                expected[user] = expected.get(user, 0) + units
                got = yield units
                assert got == "ack"
            return "done"

        return steps()

    a, b = answer("alice"), answer("bob")
    with am.consumer("caller"):
        assert (next(a), next(b)) == (expected["alice"], expected["bob"])
        for _ in range(2):
            assert am.current_consumer() == "caller"  # neither generator's scope leaks out
            expected["caller"] = expected.get("caller", 0) + chat(client, 5)
            a.send("ack")
            b.send("ack")
        for g in (a, b):
            with pytest.raises(StopIteration) as stop:
                g.send("ack")
            assert stop.value.value == "done"
    assert billed(gateway) == expected


def test_a_scope_a_decorated_generator_holds_across_a_yield_stays_its_own(meter: am.Meter, gateway: Any,
                                                                         client: openai.OpenAI) -> None:
    expected: dict[str, int] = {}

    @am.consumer("alice")
    def steps() -> Any:
        with am.consumer("bob"):
            expected["bob"] = chat(client, 2)
            yield
            assert am.current_consumer() == "bob"  # as without the decorator
            expected["bob"] += chat(client, 3)
        expected["alice"] = chat(client, 4)
        yield

    for _ in steps():
        assert am.current_consumer() == "default"
    assert billed(gateway) == expected


async def test_a_decorated_async_generator_keeps_its_scope_inside(meter: am.Meter, gateway: Any,
                                                                  mock_llm: Any) -> None:
    aclient = openai.AsyncOpenAI(base_url=mock_llm.url, api_key="x")
    expected: dict[str, int] = {}
    closed: list[str | None] = []

    @am.consumer("streamer")
    async def steps() -> Any:
        try:
            for _ in range(3):
                r = await aclient.chat.completions.create(model="gpt-4o-mini",
                                                          messages=[{"role": "user", "content": "hi"}])
                assert r.usage is not None
                expected["streamer"] = expected.get("streamer", 0) + r.usage.total_tokens
                yield r.usage.total_tokens
        finally:
            closed.append(am.current_consumer())  # closed in its own scope

    gen = steps()
    async for _ in gen:
        assert am.current_consumer() == "default"  # the meter's default: the scope stays inside
        break
    await gen.aclose()
    assert closed == ["streamer"]
    with pytest.raises(KeyError):  # thrown in, raised out unchanged
        gen2 = steps()
        await gen2.__anext__()
        await gen2.athrow(KeyError("x"))
    assert billed(gateway) == expected
    await aclient.close()
    del gen, gen2
    gc.collect()  # the async generators now, not in a later ast.parse (CPython gh-106905)


def test_bad_arguments() -> None:
    with pytest.raises(am.ConfigError, match="consumer_id"):
        am.consumer("  ")
    with pytest.raises(am.ConfigError, match="consumer_id"):
        am.consumer(None)  # type: ignore[arg-type]
    with pytest.raises(am.ConfigError, match="api_id"):
        am.consumer("x", api_id=7)  # type: ignore[arg-type]
    with pytest.raises(am.ConfigError, match="metrics"):
        am.consumer("x", metrics="bogus")  # type: ignore[arg-type]


async def test_to_thread_follows_the_scope(meter: am.Meter, gateway: Any, client: openai.OpenAI) -> None:
    async with am.consumer("threaded"):
        units = await asyncio.to_thread(chat, client, 5)
        seen = await asyncio.to_thread(am.current_consumer)
    assert seen == "threaded"
    assert billed(gateway) == {"threaded": units}


def test_thread_pool_needs_carry_consumer(meter: am.Meter, gateway: Any, client: openai.OpenAI) -> None:
    with ThreadPoolExecutor(2) as pool, am.consumer("pooled"):
        lost = pool.submit(chat, client, 3).result()  # pool threads do not inherit contextvars
        carried = pool.submit(am.carry_consumer(chat), client, 4).result()
        assert pool.submit(am.current_consumer).result() == "default"
        assert pool.submit(am.carry_consumer(am.current_consumer)).result() == "pooled"
    # the carried scope is set only for the call: the pool thread is clean afterwards
    with ThreadPoolExecutor(1) as pool:
        with am.consumer("once"):
            fn = am.carry_consumer(am.current_consumer)
        assert pool.submit(fn).result() == "once"
        assert pool.submit(am.current_consumer).result() == "default"
    assert billed(gateway) == {"default": lost, "pooled": carried}


async def test_run_in_executor_with_carry_consumer(meter: am.Meter, gateway: Any,
                                                   client: openai.OpenAI) -> None:
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(2) as pool:
        async with am.consumer("executor"):
            carried = await loop.run_in_executor(pool, am.carry_consumer(chat), client, 5)
            lost = await loop.run_in_executor(pool, chat, client, 2)
    assert billed(gateway) == {"executor": carried, "default": lost}


def test_current_consumer_follows_resolution(meter_factory: Any) -> None:
    assert am.current_consumer() is None  # no meter, no scope
    user: list[str | None] = [None]
    meter_factory(default_consumer_id="fallback", consumer_resolver=lambda: user[0])
    assert am.current_consumer() == "fallback"
    user[0] = "resolved"
    assert am.current_consumer() == "resolved"
    with am.consumer("scoped"):
        assert am.current_consumer() == "scoped"
