"""The Redis sink: appends from the reporter, the cap that never trims undelivered records, outages."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

import aerostack_meter as am
from aerostack_meter import ConfigError
from aerostack_meter.servers import start_gateway
from aerostack_meter.sinks import RedisSink

from ._redis import RedisServer
from ._support import API_ID, KEY, STREAM, gateway_totals, make_relay, run_until, undelivered


@pytest.fixture
def gw() -> Iterator[Any]:
    handle = start_gateway(keys=[KEY])
    yield handle
    handle.stop()


def _meter(url: str, **options: Any) -> am.Meter:
    options.setdefault("flush_interval", 0.02)
    return am.Meter(KEY, api_id=API_ID, base_url="http://127.0.0.1:9", sink=url, **options)


def test_records_are_appended_with_their_id_and_nothing_else(redis_db: RedisServer) -> None:
    meter = _meter(redis_db.url)
    try:
        for i in range(50):
            meter.log(f"usr_{i % 2}", 10 + i, metric="tokens")
        assert meter.flush(10)
    finally:
        meter.shutdown()
    entries = redis_db.client().xrange(STREAM)
    fields = [e[1] for e in entries]
    assert {f["c"] for f in fields} == {"usr_0", "usr_1"}
    assert sum(int(f["u"]) for f in fields) == sum(10 + i for i in range(50))
    assert sum(int(f["n"]) for f in fields) == 50
    assert all(f["r"].startswith("am-") and set(f) == {"r", "c", "a", "m", "u", "n", "e"} for f in fields)
    # the consumer group exists from the first append: nothing is skipped by a later relay
    assert [g["name"] for g in redis_db.client().xinfo_groups(STREAM)] == ["aerostack-relay"]
    assert meter.stats().events_sent == 50


def test_the_cap_never_trims_undelivered_records(redis_db: RedisServer, gw: Any,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="aerostack_meter")
    url = redis_db.url + "?maxlen=20"
    meter = _meter(url, coalesce=False)
    client = redis_db.client()
    try:
        for i in range(100):
            meter.log(f"usr_{i % 4}", 1)
        assert meter.flush(10)
        assert client.xlen(STREAM) == 100  # no relay yet: all undelivered, none trimmed
        assert meter.stats().over_cap == 80
        assert any("past its cap" in r.getMessage() for r in caplog.records)
        relay = make_relay(url, gw.url, "r1", trim_every=0.0)
        run_until(relay, lambda: undelivered(client) == 0)
        assert gateway_totals(gw) == {f"usr_{k}": 25 for k in range(4)}
        relay.run_once()  # its cap check trims what was delivered
        assert client.xlen(STREAM) <= 20
        assert relay.counters["over_cap"] == 0
    finally:
        meter.shutdown()


def test_redis_down_keeps_usage_and_delivers_after(own_redis: RedisServer) -> None:
    own_redis.stop()
    meter = _meter(own_redis.url, backoff_base=0.02, max_backoff=0.2, max_retries=10_000)
    try:
        for _ in range(20):
            meter.log("usr_a", 5)
        assert not meter.flush(0.5)  # Redis is down: nothing is delivered, nothing dropped
        s = meter.stats()
        assert s.retries > 0 and s.events_dropped == 0 and s.pending == 20
        own_redis.start()
        assert meter.flush(15)
    finally:
        meter.shutdown()
    fields = [e[1] for e in own_redis.client().xrange(STREAM)]
    assert sum(int(f["u"]) for f in fields) == 100


def test_the_url_comes_from_the_environment(redis_db: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AEROSTACK_METER_REDIS_URL", redis_db.url + "?stream=s1&maxlen=500")
    meter = am.Meter(KEY, api_id=API_ID)
    try:
        assert isinstance(meter.sink, RedisSink)
        assert (meter.sink.config.stream, meter.sink.config.maxlen) == ("s1", 500)
        meter.log("usr_env", 3)
        assert meter.flush(10)
    finally:
        meter.shutdown()
    assert [e[1]["u"] for e in redis_db.client().xrange("s1")] == ["3"]


@pytest.mark.parametrize("url", ["redis://localhost/0?maxlen=0", "redis://localhost/0?maxlen=x",
                                 "http://localhost:6379", "redis://localhost/0?stream="])
def test_a_bad_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError) as info:
        am.Meter(KEY, api_id=API_ID, sink=url)
    assert info.value.setting == "sink"


@pytest.mark.parametrize("url", ["redis://:hunter2secret@localhost:6379/0",
                                 "redis://user:hunter2secret@localhost:6379/0",
                                 "redis://localhost:6379/0?password=hunter2secret",
                                 "redis://localhost:6379/0?stream=s&PASSWORD=hunter2secret&maxlen=5",
                                 "rediss://localhost/0?ssl_password=hunter2secret"])
def test_the_password_is_never_shown(url: str) -> None:
    """Where redis-py reads one: the URL's user part, or a query parameter (``?password=``)."""
    sink = RedisSink(url)
    assert "hunter2secret" not in repr(sink) and "***" in repr(sink)


def test_an_unreachable_redis_with_a_query_password_is_logged_without_it(
        tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="aerostack_meter")
    meter = _meter("redis://127.0.0.1:1/0?password=hunter2secret", backoff_base=0.02, max_backoff=0.1)
    try:
        meter.log("usr_a", 5)
        assert not meter.flush(0.5)
    finally:
        meter.shutdown(0.1)
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "127.0.0.1:1" in messages and "hunter2secret" not in messages


def test_a_wrong_redis_password_keeps_usage_and_says_so(tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="aerostack_meter")
    server = RedisServer(tmp_path)
    server.start()
    try:
        server.client().config_set("requirepass", "right-pass")
        url = f"redis://:wrong-pass@127.0.0.1:{server.port}/0"
        meter = _meter(url, backoff_base=0.02, max_backoff=0.1, max_retries=10_000)
        try:
            meter.log("usr_a", 5)
            assert not meter.flush(0.5)
            s = meter.stats()
            assert s.events_dropped == 0 and s.pending == 1 and s.retries > 0
        finally:
            meter.shutdown(0.1)
    finally:
        import redis as _redis

        _redis.Redis(port=server.port, password="right-pass").config_set("requirepass", "")
        server.stop()
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "refused the credentials" in messages and "wrong-pass" not in messages


def test_apps_need_no_billing_key_but_an_api_id(redis_db: RedisServer) -> None:
    """With the Redis sink the key stays with the relays; the apiId must still be the real one."""
    meter = am.Meter(sink=redis_db.url, api_id=API_ID, flush_interval=0.02)
    try:
        meter.log("usr_k", 4)
        assert meter.flush(10)
    finally:
        meter.shutdown()
    assert [e[1]["a"] for e in redis_db.client().xrange(STREAM)] == [API_ID]
    keyless = am.Meter(sink=redis_db.url)
    try:
        with pytest.raises(ValueError, match="api_id"):
            keyless.log("usr_k", 4)  # never billed under the ledger's "local" label
    finally:
        keyless.shutdown()


def test_an_id_no_stream_entry_can_carry_is_refused_not_retried_forever(redis_db: RedisServer) -> None:
    meter = _meter(redis_db.url)
    try:
        meter.log("usr_\udcff", 3)  # a lone surrogate: not encodable as UTF-8
        meter.log("usr_ok", 4)
        assert meter.flush(10)
        s = meter.stats()
    finally:
        meter.shutdown()
    assert [e[1]["c"] for e in redis_db.client().xrange(STREAM)] == ["usr_ok"]
    assert s.pending == 0 and s.events_dropped + getattr(s, "dead_letters", 0) >= 1


def test_the_journal_is_in_front_of_redis(own_redis: RedisServer, tmp_path: Any) -> None:
    """Redis down and the app killed (os._exit): the usage is on disk, and `aerostack-meter drain`
    appends it once Redis is back."""
    import os
    import subprocess
    import sys

    own_redis.stop()
    state = tmp_path / "state"
    app = ("import os, aerostack_meter as am\n"
           f"m = am.init(sink={own_redis.url!r}, api_id={API_ID!r}, state_dir={str(state)!r}, "
           "flush_interval=0.05, instrument=False)\n"
           "assert m.stats().durable\n"
           "for i in range(40):\n"
           "    am.log(f'usr_{i % 4}', 1 + i)\n"
           "os._exit(0)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AEROSTACK_")}
    out = subprocess.run([sys.executable, "-c", app], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    own_redis.start()
    drained = subprocess.run(
        [sys.executable, "-m", "aerostack_meter.cli", "drain", "--timeout", "30"], capture_output=True,
        text=True, timeout=90, env={**env, "AEROSTACK_METER_REDIS_URL": own_redis.url,
                                    "AEROSTACK_METER_STATE_DIR": str(state), "AEROSTACK_API_ID": API_ID})
    assert drained.returncode == 0, drained.stdout + drained.stderr
    fields = [e[1] for e in own_redis.client().xrange(STREAM)]
    by_consumer: dict[str, int] = {}
    for f in fields:
        by_consumer[f["c"]] = by_consumer.get(f["c"], 0) + int(f["u"])
    assert by_consumer == {f"usr_{k}": sum(1 + i for i in range(40) if i % 4 == k) for k in range(4)}
