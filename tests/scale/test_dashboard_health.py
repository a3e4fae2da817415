"""The dashboard's delivery health from a Redis stream and its relays (a real redis-server)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from aerostack_meter.relay import RelayHealth
from aerostack_meter.servers import start_gateway
from aerostack_meter.servers.dashboard import start_dashboard

from ._redis import RedisServer
from ._support import KEY, STREAM, append, make_relay, run_until, undelivered


@pytest.fixture
def gw() -> Iterator[Any]:
    handle = start_gateway(keys=[KEY])
    yield handle
    handle.stop()


def test_relay_backlog_dead_letters_and_last_delivery(redis_db: RedisServer, gw: Any,
                                                      tmp_path: Any) -> None:
    client = redis_db.client()
    relay = make_relay(redis_db.url, gw.url, "r1")
    relay.run_once()
    append(client, [("ok-1", "usr_a", 5), ("bad-1", "usr_b", 7)])
    gw.client.set_faults(fail_next=1, fail_status=400)  # the first batch is refused for good
    run_until(relay, lambda: undelivered(client) == 0)
    append(client, [("ok-2", "usr_a", 3)])
    run_until(relay, lambda: undelivered(client) == 0)
    relay._publish()
    append(client, [(f"late-{i}", "usr_c", 1) for i in range(4)])  # not read yet: the backlog
    health = RelayHealth(redis_db.url).read()
    assert health.error is None
    assert health.backlog_records == 4
    assert health.dead_lettered == relay.counters["records_dead_lettered"] >= 1
    assert health.ambiguous_retries == 0
    assert health.last_success is not None and time.time() - health.last_success < 60
    assert health.details["relays"] == ["r1"]
    with start_dashboard(gateway=gw.url, redis=redis_db.url) as dash:
        body = httpx.get(dash.base_url + "/api/health", timeout=10).json()
    relay_row = next(s for s in body["sources"] if s["source"].startswith("redis "))
    assert relay_row["backlog_records"] == 4 and STREAM in relay_row["source"]
    assert body["total"]["dead_lettered"] == health.dead_lettered


def test_an_unreachable_redis_is_an_error_row_not_a_failure() -> None:
    from ._redis import free_port

    health = RelayHealth(f"redis://127.0.0.1:{free_port()}/0").read()
    assert health.error and health.backlog_records is None
