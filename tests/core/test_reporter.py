"""The reporter and the Aerostack transport against a real loopback HTTP stand-in."""

from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path
from typing import Any

import pytest

from aerostack_meter import Meter
from tests.standin import standin_server

KEY = "ac_secret_reporter_key"


def make(url: str, **options: Any) -> Meter:
    options.setdefault("flush_interval", 0.05)
    options.setdefault("backoff_base", 0.01)
    options.setdefault("max_backoff", 0.05)
    return Meter(KEY, api_id="api_chat_bot", base_url=url, **options)


def test_wire_format_is_exact() -> None:
    with standin_server() as gw:
        m = make(gw.url)
        m.log("usr_123xyz", 1500, metric="tokens")
        assert m.flush(5)
        m.shutdown()
        [req] = gw.requests
        assert req.path == "/v1/gateway/billing/log"
        assert req.headers["x-aerostack-key"] == KEY
        assert req.headers["content-type"] == "application/json"
        assert req.body == {"consumerId": "usr_123xyz", "apiId": "api_chat_bot", "metric": "tokens",
                            "units": 1500}
        assert type(req.body["units"]) is int
        assert req.headers["idempotency-key"].startswith("am-")


def test_coalescing_sums_exactly_per_key() -> None:
    with standin_server() as gw:
        m = make(gw.url, flush_interval=0.5)
        expected: dict[tuple[str, str], int] = {}
        for i in range(300):
            consumer, metric = f"c{i % 3}", ("tokens", "images")[i % 2]
            m.log(consumer, i, metric=metric)
            expected[(consumer, metric)] = expected.get((consumer, metric), 0) + i
        assert m.flush(5)
        got: dict[tuple[str, str], int] = {}
        for r in gw.requests:
            k = (r.body["consumerId"], r.body["metric"])
            got[k] = got.get(k, 0) + r.body["units"]
        assert got == expected
        assert len(gw.requests) == len(expected)  # one request per key in the window
        s = m.stats()
        assert s.events_sent == 300 and s.requests_sent == len(expected)
        assert s.units_sent["tokens"] + s.units_sent["images"] == sum(range(300))
        m.shutdown()


def test_no_coalescing_sends_one_request_per_event() -> None:
    with standin_server() as gw:
        m = make(gw.url, coalesce=False)
        for _ in range(5):
            m.log("c", 2)
        assert m.flush(5)
        assert [r.body["units"] for r in gw.requests] == [2] * 5
        assert len({r.headers["idempotency-key"] for r in gw.requests}) == 5
        m.shutdown()


@pytest.mark.parametrize(
    "failure",
    [
        (429, {"Retry-After": "0"}, b'{"code":"RATE_LIMIT_EXCEEDED","message":"slow down"}'),
        (500, {}, b'{"code":"INTERNAL_ERROR","message":"boom"}'),
        (503, {}, b""),
        (502, {}, b"<html>bad gateway</html>"),
    ],
    ids=["429", "500", "503", "502"],
)
def test_retries_keep_the_idempotency_key(failure: Any) -> None:
    with standin_server() as gw:
        gw.respond(failure, failure)
        m = make(gw.url)
        m.log("c", 7)
        assert m.flush(5)
        assert [r.headers["x-status"] for r in gw.requests] == [str(failure[0])] * 2 + ["200"]
        assert len({r.headers["idempotency-key"] for r in gw.requests}) == 1
        assert gw.units_by_consumer() == {"c": 7}
        s = m.stats()
        assert s.retries == 2
        assert s.ambiguous_retries == (2 if failure[0] == 502 else 0)
        m.shutdown()


def test_retry_after_is_honoured() -> None:
    import time

    with standin_server() as gw:
        gw.respond((429, {"Retry-After": "1"}, b"{}"))
        m = make(gw.url)
        m.log("c", 1)
        t0 = time.monotonic()
        assert m.flush(5)
        assert time.monotonic() - t0 >= 0.95
        assert len(gw.requests) == 2
        m.shutdown()


@pytest.mark.parametrize("status", [400, 404, 422])
def test_refusals_go_to_the_dead_letter_store_not_retried(status: int,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    with standin_server() as gw:
        gw.respond((status, {}, json.dumps({"code": "VALIDATION_ERROR", "message": "bad units"}).encode()))
        m = make(gw.url)
        m.log("c", 1)
        assert m.flush(5)
        assert len(gw.requests) == 1
        s = m.stats()
        assert s.dropped == {} and s.dead_lettered == 1
        assert "bad units" in caplog.text
        assert "aerostack-meter report --dead-letters" in caplog.text  # the command that lists it
        assert m.dead_letters is not None
        [entry], bad = m.dead_letters.read()
        assert bad == 0
        assert (entry["consumerId"], entry["units"], entry["reason"]) == ("c", 1, f"rejected_{status}")
        m.shutdown()


def test_refusals_without_a_state_dir_are_dropped_and_counted() -> None:
    with standin_server() as gw:
        gw.respond((400, {}, b'{"message": "bad"}'))
        m = make(gw.url, durable=False)
        m.log("c", 1)
        assert m.flush(5)
        assert m.stats().dropped == {"rejected_400": 1}
        m.shutdown()


def test_one_refusal_of_several_requests_in_flight_is_one_pause() -> None:
    """Four consumers' requests go out together (four senders, the gateway emulator answering them
    concurrently); all four are refused: one pause."""
    from aerostack_meter.servers import start_gateway

    gw = start_gateway(keys=["ac_secret_the_right_one"])
    try:
        m = make(gw.url, concurrency=4)
        for i in range(4):
            m.log(f"c{i}", 1)
        assert m.flush(5) is False
        s = m.stats()
        assert gw.client.stats()["rejected_auth"] >= 2  # more than one request was refused
        assert s.paused and s.paused_count == 1 and s.pending == 4
        assert m.shutdown(0.2) is False
    finally:
        gw.stop()


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_pauses_delivery_and_keeps_the_usage(status: int,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    with standin_server() as gw:
        gw.respond((status, {}, b'{"code": "UNAUTHORIZED", "message": "invalid key"}'))
        m = make(gw.url)
        m.log("c", 1)
        assert m.flush(5) is False  # returns at once: nothing moves until the key is fixed
        m.log("c", 2)
        assert m.flush(0.5) is False
        s = m.stats()
        assert s.paused and s.paused_count == 1 and s.dropped == {} and s.pending == 2
        assert len(gw.requests) == 1  # paused: no request per event
        assert "invalid key" in caplog.text and "paused" in caplog.text
        assert m.shutdown(0.2) is False
        # a process with the right key on the same state directory delivers it
        m2 = make(gw.url)
        assert m2.flush(5)
        m2.shutdown()
        assert gw.units_by_consumer() == {"c": 3}


def test_refused_connection_is_retried_until_the_server_is_back() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens: connections are refused
    m = Meter(KEY, api_id="a", base_url=f"http://127.0.0.1:{port}/v1", flush_interval=0.05,
              backoff_base=0.05, max_backoff=0.1)
    m.log("c", 3)
    assert not m.flush(0.5)
    assert m.stats().retries >= 1
    assert m.stats().pending == 1
    m.shutdown(0.1)


@pytest.mark.parametrize("durable", [True, False], ids=["durable", "memory"])
def test_flush_and_shutdown_return_within_their_timeouts(durable: bool) -> None:
    import time

    with standin_server() as gw:
        gw.respond(*([(503, {"Retry-After": "30"}, b"")] * 3))
        m = make(gw.url, durable=durable)
        m.log("c", 1)
        t0 = time.monotonic()
        assert m.flush(0.3) is False
        assert m.shutdown(0.3) is False
        assert time.monotonic() - t0 < 1.5
        if durable:  # kept on disk for the next start or `aerostack-meter drain`
            assert m.stats().dropped == {} and m.stats().spooled == 1
        else:
            assert m.stats().dropped.get("exit_timeout") == 1


def test_a_meter_used_again_after_a_shutdown_during_an_outage_bills_each_event_once(tmp_path: Path) -> None:
    # shutdown() gives up while a request waits to be retried (the usage stays in the journal);
    # the meter is used again (documented as allowed) and the API comes back. Before the fix the
    # request went out twice: from the retry kept in memory, and as a replay of the closed
    # journal its next start adopted (under the same key, counted nowhere).
    import time

    with standin_server() as gw:
        gw.respond(*([(503, {"Retry-After": "30"}, b"")] * 100))  # the outage
        m = make(gw.url, state_dir=str(tmp_path))
        m.log("c", 100)
        deadline = time.monotonic() + 5
        while m.stats().retries == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert m.stats().retries >= 1
        assert m.shutdown(0.1) is False
        assert (m.stats().pending, m.stats().spooled) == (1, 1)
        assert m.shutdown(0.1) is False  # said again: nothing was delivered meanwhile
        with gw.lock:
            gw.script.clear()  # the API is back
        m.log("c", 1)
        assert m.flush(10)
        assert m.shutdown(5)
        assert gw.units_by_consumer() == {"c": 101}
        st = m.stats()
        assert (st.events_sent, st.ambiguous_retries) == (2, 0)
        assert [t.name for t in threading.enumerate() if t.name == "aerostack-meter-reporter"] == []


def test_memory_mode_usage_a_shutdown_gave_up_on_is_no_longer_counted_dropped_once_delivered() -> None:
    with standin_server() as gw:
        gw.respond(*([503] * 1000))
        m = make(gw.url, durable=False)
        m.log("old", 5)
        assert m.shutdown(0.3) is False
        assert m.stats().dropped == {"exit_timeout": 1}
        with gw.lock:
            gw.script.clear()
        m.log("new", 7)  # used again: what the shutdown kept in memory goes out now
        assert m.flush(5)
        assert gw.units_by_consumer() == {"old": 5, "new": 7}
        assert m.stats().dropped == {}  # (it said "dropped" and delivered it)
        assert m.shutdown(5)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_child_forked_while_another_thread_is_in_shutdown_delivers_its_own_usage(tmp_path: Path) -> None:
    import time

    with standin_server() as gw:
        gw.respond(*([503] * 1000))  # the parent's shutdown() retries for its whole timeout
        m = make(gw.url, state_dir=str(tmp_path))
        m.log("parent", 1)
        time.sleep(0.2)
        stopper = threading.Thread(target=m.shutdown, args=(3,))
        stopper.start()
        time.sleep(0.5)
        with gw.lock:
            gw.script.clear()
        pid = os.fork()
        if pid == 0:  # the child: a fresh process, its own journal and delivery
            m.log("child", 7)
            os._exit(0 if m.flush(5) else 1)
        _, status = os.waitpid(pid, 0)
        stopper.join()
        assert os.waitstatus_to_exitcode(status) == 0  # (before: never started, flush() False)
        assert gw.units_by_consumer().get("child") == 7


def test_a_shutdown_called_while_another_is_flushing_waits_for_it_and_says_the_same() -> None:
    import time

    with standin_server() as gw:
        gw.respond(*([503] * 50))
        m = make(gw.url, durable=False)
        m.log("c", 1)
        first: list[bool] = []
        thread = threading.Thread(target=lambda: first.append(m.shutdown(0.5)))
        thread.start()
        time.sleep(0.1)
        assert m.shutdown(0.5) is False  # (it returned True at once, with nothing delivered)
        thread.join()
        assert first == [False]


def test_queue_overflow_keeps_the_totals() -> None:
    # memory mode: the queue is bounded (the journal is the queue in durable mode)
    with standin_server() as gw:
        m = make(gw.url, max_queue_size=10, flush_interval=0.5, durable=False)
        for _ in range(1000):
            m.log("c", 3)
        assert m.flush(5)
        assert gw.units_by_consumer() == {"c": 3000}
        s = m.stats()
        assert s.queue_overflows > 0
        assert s.events_enqueued == 1000 and s.events_sent == 1000
        m.shutdown()


def test_many_threads_log_concurrently() -> None:
    with standin_server() as gw:
        m = make(gw.url)

        def work(i: int) -> None:
            for _ in range(500):
                m.log(f"t{i}", 1)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert m.flush(5)
        assert gw.units_by_consumer() == {f"t{i}": 500 for i in range(8)}
        m.shutdown()


def test_hostile_bodies_are_counted_not_raised() -> None:
    with standin_server() as gw:
        gw.respond((200, {}, b"<html>hi</html>"), (200, {}, b'{"success": false, "message": "no"}'))
        m = make(gw.url, coalesce=False)
        m.log("a", 1)
        m.log("b", 1)
        assert m.flush(5)
        s = m.stats()
        assert s.events_sent == 1  # the HTML 200 counts as delivered
        assert s.dropped == {} and s.dead_lettered == 1  # success: false is a refusal
        m.shutdown()


def test_an_outage_holds_the_window_instead_of_multiplying_retrying_requests() -> None:
    import time

    with standin_server() as gw:
        gw.respond(*([503] * 100_000))
        m = make(gw.url, flush_interval=0.02, backoff_base=0.1, max_backoff=0.2)
        m.log("c", 1)
        deadline = time.monotonic() + 10
        while m.stats().retries == 0:  # the outage is known (else load decides how many
            assert time.monotonic() < deadline  # batches form before the first answer)
            time.sleep(0.01)
        for _ in range(99):  # ~1 s: some 50 windows
            m.log("c", 1)
            time.sleep(0.01)
        during = len(gw.requests)
        with gw.lock:
            gw.script.clear()
        assert m.flush(5)
        m.shutdown()
        assert gw.units_by_consumer() == {"c": 100}
        # One batch probes the outage (with backoff) while the rest sums into the open window;
        # without the hold every window adds a retrying request (~50 batches: 300+ requests).
        assert during < 60, during
        assert len(gw.accepted()) <= 3  # the batch that met the outage, the window, + 1


class _KeyedSink:
    """A sink that fails (retryably) for the consumers in ``failing`` and accepts the rest."""

    def __init__(self, failing: set[str]) -> None:
        self.failing = failing
        self.lock = threading.Lock()
        self.attempts: dict[str, int] = {}
        self.units: dict[str, int] = {}

    def send(self, batch: Any) -> Any:
        from aerostack_meter.sinks import SendResult

        with self.lock:
            self.attempts[batch.consumer_id] = self.attempts.get(batch.consumer_id, 0) + 1
            if batch.consumer_id in self.failing:
                return SendResult("retry", reason="http_503")
            self.units[batch.consumer_id] = self.units.get(batch.consumer_id, 0) + batch.units
        return SendResult("ok")

    def close(self) -> None:
        pass

    def after_fork(self) -> None:
        pass


@pytest.mark.parametrize("spool", [False, True], ids=["memory", "spool"])
def test_a_key_that_keeps_failing_holds_up_only_itself(spool: bool, tmp_path: Any) -> None:
    import time

    sink = _KeyedSink({"poison"})
    options: dict[str, Any] = {"spool_path": str(tmp_path / "s.db")} if spool else {"durable": False}
    m = Meter(KEY, api_id="a", sink=sink, flush_interval=0.02, backoff_base=0.05, max_backoff=0.1,
              max_retries=1000, **options)
    for _ in range(50):  # ~1 s: some 50 windows
        m.log("poison", 1)
        m.log("ok", 2)
        time.sleep(0.02)
    deadline = time.monotonic() + 5
    while sink.units.get("ok", 0) < 100 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sink.units.get("ok") == 100  # delivered on time: not held by the failing key
    # The failing key retries one batch (with backoff) and sums the rest into it: one request
    # per window would be ~50 batches retrying every 0.1 s (hundreds of attempts).
    assert sink.attempts["poison"] < 60, sink.attempts
    sink.failing.clear()
    assert m.flush(5)
    m.shutdown()
    assert sink.units == {"ok": 100, "poison": 50}


def test_a_long_rate_limit_with_retry_after_does_not_use_up_the_retries() -> None:
    with standin_server() as gw:
        gw.respond(*([(429, {"Retry-After": "0"}, b"{}")] * 25))
        m = make(gw.url, max_retries=3)
        m.log("c", 4)
        assert m.flush(10)
        assert gw.units_by_consumer() == {"c": 4}
        assert m.stats().retries == 25 and not m.stats().dropped
        m.shutdown()


def test_stats_counts_a_fresh_event_in_pending_until_the_reporter_reads_it() -> None:
    """What the README's Stats section says: a just-logged event is in `pending` at once; the
    `events_enqueued` / `calls_metered` counters follow when the reporter reads it (`flush()`)."""
    with standin_server() as gw:
        m = make(gw.url, flush_interval=30)
        m.log("usr_1", 7, metric="tokens")
        s = m.stats()
        assert s.pending + s.events_sent == 1  # never lost from view, whichever side it is on
        assert s.events_enqueued <= 1
        assert m.flush(5)
        s = m.stats()
        assert (s.events_enqueued, s.events_sent, s.pending) == (1, 1, 0)
        assert [r.body["units"] for r in gw.requests] == [7]
        m.shutdown()
