"""The thread runner: fast start, real port, stop, restart on the same port; the public names."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import aerostack_meter.servers as servers
from aerostack_meter.servers._runner import Closing, ServerThread


async def _hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


APP = Starlette(routes=[Route("/", _hello)])


def test_starts_fast_on_a_free_port_and_stops() -> None:
    start = time.perf_counter()
    server = ServerThread(APP).start()
    started = time.perf_counter() - start
    try:
        assert started < 1.0
        assert server.port > 0
        assert server.base_url == f"http://127.0.0.1:{server.port}"
        assert httpx.get(server.base_url).text == "hello"
    finally:
        start = time.perf_counter()
        server.stop()
        assert time.perf_counter() - start < 1.0
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.base_url, timeout=1)
    server.stop()  # idempotent


def test_context_manager_and_restart_on_same_port() -> None:
    with ServerThread(APP) as first:
        port = first.port
        assert httpx.get(first.base_url).status_code == 200
    with ServerThread(APP, port=port) as second:
        assert second.port == port
        assert httpx.get(second.base_url).text == "hello"


def test_port_in_use_raises() -> None:
    with ServerThread(APP) as first, pytest.raises(OSError):
        ServerThread(APP, port=first.port).start()


def test_closing_wakes_sleepers() -> None:
    closing = Closing()
    results: list[bool] = []
    entered = threading.Event()

    async def slow(request: Request) -> PlainTextResponse:
        entered.set()
        results.append(await closing.sleep(30))
        return PlainTextResponse("late")

    server = ServerThread(Starlette(routes=[Route("/", slow)]), closing=closing).start()
    client = threading.Thread(target=_get_quietly, args=(server.base_url,))
    client.start()
    assert entered.wait(10)  # the handler is asleep (a fixed pause lost the race under load)
    start = time.perf_counter()
    server.stop()
    client.join(5)
    assert results == [False]  # woken early, not after 30 s
    assert time.perf_counter() - start < 3


def _get_quietly(url: str) -> None:
    with contextlib.suppress(httpx.HTTPError):
        httpx.get(url, timeout=10)


def test_closing_sleep_returns_true_when_not_closed() -> None:
    closing = Closing()

    async def main() -> tuple[bool, bool]:
        closing.bind(asyncio.get_running_loop())
        return await closing.sleep(0.01), await closing.sleep(0)

    assert asyncio.run(main()) == (True, True)


def test_public_names() -> None:
    assert sorted(servers.__all__) == [
        "GatewayClient",
        "GatewayHandle",
        "MockLLMHandle",
        "start_gateway",
        "start_mock_llm",
    ]
    for name in servers.__all__:
        assert getattr(servers, name) is not None
