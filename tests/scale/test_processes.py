"""Several app processes appending to Redis and two relay processes delivering, through faults:
a relay killed with SIGKILL mid-stream, Redis restarted mid-run (AOF on), the billing API down."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from aerostack_meter.servers import start_gateway, start_mock_llm

from ._procs import (
    check_totals,
    finish_apps,
    relay_counters,
    start_app,
    start_relay,
    stop,
    wait_delivered,
)
from ._redis import RedisServer
from ._support import KEY

CONSUMERS = ["usr_a", "usr_b", "usr_c", "usr_d"]


@pytest.fixture
def servers() -> Iterator[tuple[Any, Any]]:
    gw = start_gateway(keys=[KEY])
    llm = start_mock_llm()
    yield gw, llm
    gw.stop()
    llm.stop()


def _apps(redis: RedisServer, gw: Any, llm: Any, n: int = 3, calls: int = 60, pace: float = 0.01) -> list[Any]:
    return [start_app(redis.url, gw.url, llm.url, CONSUMERS, calls, pace) for _ in range(n)]


def _wait_for_traffic(client: Any, timeout: float = 30.0) -> None:
    """Until the apps have started appending (a loaded machine takes seconds to start them)."""
    deadline = time.monotonic() + timeout
    while not (client.exists("aerostack:usage") and client.xlen("aerostack:usage") >= 5):
        assert time.monotonic() < deadline, "the apps never appended"
        time.sleep(0.05)


@pytest.mark.timeout(120)
def test_a_relay_killed_mid_stream_leaves_its_entries_to_the_other(
        own_redis: RedisServer, servers: tuple[Any, Any]) -> None:
    gw, llm = servers
    gw.client.set_faults(latency_ms=150)  # requests in flight most of the time: a kill lands mid-request
    client = own_redis.client()
    r1 = start_relay(own_redis.url, gw.url, "r1")
    r2 = start_relay(own_redis.url, gw.url, "r2")
    apps = _apps(own_redis, gw, llm, calls=100)
    try:
        deadline = time.monotonic() + 30
        while int(relay_counters(client, "r1").get("requests", 0)) < 3 or not client.xpending_range(
                "aerostack:usage", "aerostack-relay", min="-", max="+", count=1, consumername="r1"):
            # until r1 has delivered and holds entries right now (read, not acknowledged)
            assert time.monotonic() < deadline, "r1 never delivered"
            time.sleep(0.01)
        r1.send_signal(signal.SIGKILL)
        r1.wait()
        finish_apps(apps)
        wait_delivered(client)
    finally:
        err = stop(r2)
        stop(r1)
    check_totals(gw, llm, client)
    pending = {c["name"]: int(c["pending"]) for c in client.xinfo_consumers("aerostack:usage", "aerostack-relay")}
    assert pending.get("r1", 0) == 0, (pending, err[-2000:])
    assert int(relay_counters(client, "r2").get("entries_claimed", 0)) > 0  # r1 died holding some


@pytest.mark.timeout(120)
def test_redis_restarted_mid_run(own_redis: RedisServer, servers: tuple[Any, Any]) -> None:
    gw, llm = servers
    client = own_redis.client()
    relays = [start_relay(own_redis.url, gw.url, name) for name in ("r1", "r2")]
    apps = _apps(own_redis, gw, llm, calls=80, pace=0.02)
    try:
        _wait_for_traffic(client)
        own_redis.restart(down_for=1.0)  # SIGTERM: the AOF is fsynced; clients see it vanish
        finish_apps(apps)
        client = own_redis.client()
        wait_delivered(client)
    finally:
        for r in relays:
            stop(r)
    check_totals(gw, llm, client)
    errors = sum(int(relay_counters(client, n).get("redis_errors", 0)) for n in ("r1", "r2"))
    assert errors > 0  # the relays did see Redis go away


@pytest.mark.timeout(120)
def test_the_billing_api_down_for_a_while(own_redis: RedisServer, servers: tuple[Any, Any]) -> None:
    gw, llm = servers
    client = own_redis.client()
    relays = [start_relay(own_redis.url, gw.url, name) for name in ("r1", "r2")]
    apps = _apps(own_redis, gw, llm, calls=120, pace=0.02)
    try:
        _wait_for_traffic(client)
        gw.client.set_faults(fail_rate=1.0, fail_statuses=[503])
        time.sleep(3.0)
        gw.client.clear_faults()
        finish_apps(apps)
        wait_delivered(client)
    finally:
        for r in relays:
            stop(r)
    excess = check_totals(gw, llm, client)
    assert excess == {}  # a 503 is a clean refusal: nothing may be billed twice
    retries = sum(int(relay_counters(client, n).get("retries", 0)) for n in ("r1", "r2"))
    assert retries > 0
