"""The relay against a real redis-server and the gateway emulator (relays run in this process)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from aerostack_meter.relay import StreamConfig, gather
from aerostack_meter.relay._metrics import serve_metrics
from aerostack_meter.servers import start_gateway

from ._redis import RedisServer
from ._support import (
    KEY,
    STREAM,
    append,
    gateway_totals,
    key_excess,
    make_relay,
    run_until,
    undelivered,
)


@pytest.fixture
def gw() -> Iterator[Any]:
    handle = start_gateway(keys=[KEY])
    yield handle
    handle.stop()


def _records(n: int, consumers: int = 3, prefix: str = "rec") -> list[tuple[str, str, int]]:
    return [(f"{prefix}-{i}", f"usr_{i % consumers}", 1 + i % 17) for i in range(n)]


def _expected(records: list[tuple[str, str, int]]) -> dict[str, int]:
    out: Counter[str] = Counter()
    for _, c, u in records:
        out[c] += u
    return dict(out)


def test_delivers_coalesced_and_acknowledges(redis_db: RedisServer, gw: Any) -> None:
    client = redis_db.client()
    relay = make_relay(redis_db.url, gw.url, "r1")
    relay.run_once()  # creates the group
    records = _records(300)
    append(client, records)
    run_until(relay, lambda: undelivered(client) == 0)
    assert gateway_totals(gw) == _expected(records)
    # per (consumer, API, metric): far fewer requests than records
    assert relay.counters["requests"] < len(records) / 10
    assert relay.counters["records_delivered"] == 300
    assert client.get(f"{STREAM}:rec:rec-0", ).startswith("D:")
    assert client.pttl(f"{STREAM}:rec:rec-0") > 0


def test_a_replayed_record_id_is_delivered_once(redis_db: RedisServer, gw: Any) -> None:
    client = redis_db.client()
    relay = make_relay(redis_db.url, gw.url, "r1")
    relay.run_once()
    records = _records(30)
    append(client, records)
    append(client, records[:10])  # the same ids appended again (an XADD retried after a lost answer)
    run_until(relay, lambda: undelivered(client) == 0)
    append(client, records[10:20])  # and again, long after they were delivered
    run_until(relay, lambda: undelivered(client) == 0)
    assert gateway_totals(gw) == _expected(records)
    assert relay.counters["duplicates_skipped"] + relay.counters["already_delivered"] == 20


def test_a_dead_relays_entries_are_claimed_by_another(redis_db: RedisServer, gw: Any) -> None:
    client = redis_db.client()
    records = _records(60)
    dead = make_relay(redis_db.url, gw.url, "dead", claim_idle=0.3)
    dead.run_once()
    append(client, records)
    gw.client.set_faults(fail_rate=1.0, fail_statuses=[503])
    dead.run_once()  # takes everything, fails to deliver, holds it...
    assert dead.held == 60
    # ... and dies (is never run again). Another relay claims what it held once it is idle.
    gw.client.clear_faults()
    alive = make_relay(redis_db.url, gw.url, "alive", claim_idle=0.3)
    run_until(alive, lambda: undelivered(client) == 0)
    assert alive.counters["entries_claimed"] == 60
    assert gateway_totals(gw) == _expected(records)
    assert sum(int(c["pending"]) for c in client.xinfo_consumers(STREAM, "aerostack-relay")) == 0


def test_a_live_relay_in_an_outage_keeps_its_entries(redis_db: RedisServer, gw: Any) -> None:
    client = redis_db.client()
    records = _records(40)
    a = make_relay(redis_db.url, gw.url, "a", claim_idle=0.3)
    b = make_relay(redis_db.url, gw.url, "b", claim_idle=0.3)
    a.run_once()
    append(client, records)
    gw.client.set_faults(fail_rate=1.0, fail_statuses=[503])
    deadline = time.monotonic() + 1.5  # five claim_idle periods of outage
    while time.monotonic() < deadline:
        a.run_once()
        b.run_once()
    assert a.held == 40 and b.counters["entries_claimed"] == 0  # a refreshed its claim
    gw.client.clear_faults()
    run_until(a, lambda: undelivered(client) == 0)
    assert gateway_totals(gw) == _expected(records)


def test_a_relay_dead_mid_request_is_resent_under_the_same_key_and_counted(
        redis_db: RedisServer, gw: Any) -> None:
    client = redis_db.client()
    records = _records(30)
    dead = make_relay(redis_db.url, gw.url, "dead", claim_idle=0.3)
    dead.run_once()
    append(client, records)
    # the gateway commits every request but the answers are lost: the relay cannot know
    gw.client.set_faults(lose_response_rate=1.0, lose_response_mode="drop")
    dead.run_once()
    gw.client.clear_faults()
    alive = make_relay(redis_db.url, gw.url, "alive", claim_idle=0.3)
    run_until(alive, lambda: undelivered(client) == 0)
    excess = key_excess(gw)
    totals = gateway_totals(gw)
    expected = _expected(records)
    # every double debit is a repeat under the same Idempotency-Key, and counted as ambiguous
    assert {c: totals[c] - excess.get(c, 0) for c in totals} == expected
    assert sum(excess.values()) == sum(expected.values())
    ambiguous = {k: int(v) for k, v in client.hgetall(f"{STREAM}:ambiguous").items()}
    assert all(ambiguous.get(c, 0) >= excess[c] for c in excess)


def test_a_refused_record_goes_to_the_dead_letter_stream(redis_db: RedisServer, gw: Any) -> None:
    client = redis_db.client()
    relay = make_relay(redis_db.url, gw.url, "r1")
    relay.run_once()
    append(client, [("bad-1", "usr_x", 5)])
    gw.client.set_faults(fail_next=1, fail_status=400)
    run_until(relay, lambda: undelivered(client) == 0)
    assert relay.counters["records_dead_lettered"] == 1
    dead = client.xrange(f"{STREAM}:dead")
    assert [(d[1]["r"], d[1]["c"], d[1]["reason"]) for d in dead] == [("bad-1", "usr_x", "rejected_400")]
    assert gateway_totals(gw) == {}
    # the refused entry is copied whole: its units stay known once the main stream is trimmed
    [(_id, fields)] = dead
    [(entry_id, original)] = client.xrange(STREAM)
    assert fields == {**original, "entry": entry_id, "reason": "rejected_400"}
    assert int(fields["u"]) == 5


def test_a_wrong_key_holds_everything_until_fixed(redis_db: RedisServer, gw: Any) -> None:
    client = redis_db.client()
    from aerostack_meter._config import build_settings
    from aerostack_meter.relay import Relay, RelayOptions

    wrong = Relay(StreamConfig.from_url(redis_db.url),
                  build_settings("wrong-key", base_url=gw.url, max_backoff=0.05, environ={}),
                  RelayOptions(name="wrong", block=0.05, claim_idle=0.3))
    wrong.run_once()
    records = _records(10)
    append(client, records)
    for _ in range(5):
        wrong.run_once()
    assert wrong.held == 10 and wrong.counters["records_dead_lettered"] == 0
    wrong.stop()  # replaced by a relay with the right key: it claims and delivers
    right = make_relay(redis_db.url, gw.url, "right", claim_idle=0.3)
    run_until(right, lambda: undelivered(client) == 0)
    assert gateway_totals(gw) == _expected(records)


def test_stats_and_metrics(redis_db: RedisServer, gw: Any) -> None:
    client = redis_db.client()
    relay = make_relay(redis_db.url, gw.url, "r1", publish_every=0.0)
    relay.run_once()
    append(client, _records(20))
    run_until(relay, lambda: undelivered(client) == 0)
    append(client, _records(5, prefix="later"))  # not read yet: lag
    snap = gather(client, StreamConfig.from_url(redis_db.url))
    assert snap["lag"] == 5 and snap["undelivered"] == 5 and snap["length"] == 25
    assert snap["relays"]["r1"]["records_delivered"] == 20
    server = serve_metrics(relay, "127.0.0.1", 0)
    try:
        text = httpx.get(f"http://127.0.0.1:{server.server_port}/metrics").text
    finally:
        server.shutdown()
    assert 'aerostack_relay_records_delivered_total{relay="r1"} 20.0' in text
    assert 'aerostack_relay_lag_entries{relay="r1"} 5.0' in text
    assert 'aerostack_relay_redis_up{relay="r1"} 1.0' in text


def test_a_relay_recreates_a_lost_group(redis_db: RedisServer, gw: Any) -> None:
    """Redis restarted without its data: the relay recreates the group and delivers what comes."""
    import threading

    client = redis_db.client()
    relay = make_relay(redis_db.url, gw.url, "r1")
    relay.run_once()
    client.flushall()
    records = _records(12)
    append(client, records)  # XADD recreates the stream, not the group
    t = threading.Thread(target=relay.run)
    t.start()
    try:
        deadline = time.monotonic() + 15
        while gateway_totals(gw) != _expected(records):
            assert time.monotonic() < deadline, dict(relay.counters)
            time.sleep(0.05)
    finally:
        relay.stop()
        t.join(10)


def test_dead_letters_sent_again_once_their_cause_is_fixed(redis_db: RedisServer, gw: Any) -> None:
    """A record refused for good (402: the wallet is empty) waits in the dead-letter stream;
    ``relay --retry-dead`` moves it back (under a derived record id: the old one is remembered as
    dead-lettered) and a relay delivers it once the wallet is topped up. Not-a-record entries stay."""
    import subprocess
    import sys

    client = redis_db.client()
    relay = make_relay(redis_db.url, gw.url, "r1")
    relay.run_once()
    append(client, [("poor-1", "usr_x", 5), ("poor-2", "usr_x", 7)])
    client.xadd(f"{STREAM}:dead", {"entry": "0-1", "junk": "1", "reason": "invalid_entry"})
    gw.client.set_faults(fail_next=1, fail_status=402)
    run_until(relay, lambda: undelivered(client) == 0)
    assert relay.counters["records_dead_lettered"] == 2 and gateway_totals(gw) == {}
    moved = subprocess.run([sys.executable, "-m", "aerostack_meter.cli", "relay", "--retry-dead",
                            "--redis", redis_db.url], capture_output=True, text=True, timeout=60)
    assert moved.returncode == 0, moved.stderr
    assert "moved 2 dead-lettered record(s), 12 units" in moved.stdout and "1 entr" in moved.stdout
    assert [f["reason"] for _, f in client.xrange(f"{STREAM}:dead")] == ["invalid_entry"]
    run_until(relay, lambda: gateway_totals(gw) == {"usr_x": 12})
    run_until(relay, lambda: undelivered(client) == 0)
    assert gateway_totals(gw) == {"usr_x": 12}
    again = subprocess.run([sys.executable, "-m", "aerostack_meter.cli", "relay", "--retry-dead",
                            "--redis", redis_db.url], capture_output=True, text=True, timeout=60)
    assert "moved 0 dead-lettered record(s)" in again.stdout
