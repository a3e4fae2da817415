"""The fault matrix: nothing lost, nothing doubled, per consumer, whatever happens in between.

Every cell runs the workload (tests/matrix/workload.py) as a real process making real SDK calls to
the mock LLM server and reporting to the gateway emulator, then checks, per consumer:

    gateway units - duplicate-key excess == usage the mock LLM server returned

Duplicates (an ``Idempotency-Key`` logged twice) may occur only in the ambiguous cells (the
request may have been processed when the client saw a failure); there they are bounded by the
workload's ``stats().ambiguous_retries``. Rows F* are gateway faults with a normal process; rows
P* are process events, each with 30% 5xx at the gateway.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aerostack_meter.servers import start_gateway, start_mock_llm

from ._harness import (
    KEY,
    PROVIDERS,
    Ledger,
    Run,
    config,
    expected_usage,
    finish,
    ledger,
    read_until,
    record,
    run,
    start,
    write_report,
)

FIVE_XX = {"fail_rate": 0.3, "seed": 8}  # this seed draws 502, 503 and 500 early


class Servers:
    """The gateway (on a database file, so it can go down and come back) and the mock LLM."""

    def __init__(self, tmp: Path) -> None:
        self.db = str(tmp / "gateway.db")
        self.gw = start_gateway(keys=[KEY], db_path=self.db)
        self.llm = start_mock_llm()

    def take_down(self) -> None:
        self.gw.stop()

    def bring_up(self) -> None:
        self.gw = start_gateway(keys=[KEY], db_path=self.db, port=self.gw.port)

    def stop(self) -> None:
        self.gw.stop()
        self.llm.stop()


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[Servers]:
    s = Servers(tmp_path)
    yield s
    s.stop()


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    write_report()


def injected(s: Servers) -> dict[str, int]:
    return dict(s.gw.client.stats()["injected_fault"])


def check(s: Servers, r: Run, cell: str, t0: float, *, ambiguous: bool, settle: float = 0.3,
          extra: dict[str, int] | None = None, note: str = "") -> Ledger:
    """The accounting every cell shares; returns the ledger for cell-specific checks."""
    expected = expected_usage(s.llm)
    for c, u in (extra or {}).items():
        expected[c] = expected.get(c, 0) + u
    book = ledger(s.gw.client, settle)
    record(cell, expected, book, r, time.monotonic() - t0, note)
    assert r.stats, f"the workload printed no stats; rc={r.returncode} stderr:\n{r.stderr[-3000:]}"
    assert expected, "the workload made no calls"
    assert book.keys_without_header == 0
    assert book.net == expected, (book, expected)
    assert r.dropped() == {}
    assert all(st["pending"] == 0 and st["internal_errors"] == 0 for st in r.stats), r.stats
    if ambiguous:
        assert book.excess_rows <= r.total("ambiguous_retries")
    else:
        assert book.excess_rows == 0 and s.gw.client.duplicates() == {}
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    return book


# -- F: gateway faults, normal process ----------------------------------------------------------

@pytest.mark.timeout(90)
def test_F0_no_faults(srv: Servers) -> None:
    t0 = time.monotonic()
    r = run(config(srv.gw, srv.llm, calls=150, providers=PROVIDERS, flush=20))
    assert r.returncode == 0, r.stderr
    check(srv, r, "F0 no faults", t0, ambiguous=False)
    assert r.total("retries") == 0


@pytest.mark.timeout(90)
def test_F1_30pct_5xx(srv: Servers) -> None:
    srv.gw.client.set_faults(**FIVE_XX)
    t0 = time.monotonic()
    r = run(config(srv.gw, srv.llm, calls=200, providers=PROVIDERS, flush=20))
    assert r.returncode == 0, r.stderr
    faults = injected(srv)
    check(srv, r, "F1 30% 500/502/503", t0, ambiguous=False)
    assert faults["fail"] > 0 and faults.get("fail_502", 0) > 0
    assert r.total("retries") == faults["fail"]  # every failed attempt was retried
    # 502 is ambiguous for the client (a proxy may have forwarded it) though this one was not
    # processed: counted, and nothing doubled.
    assert r.total("ambiguous_retries") == faults.get("fail_502", 0)


@pytest.mark.timeout(90)
def test_F2_429_bursts_with_retry_after(srv: Servers) -> None:
    stop = threading.Event()

    def bursts() -> None:  # a burst of ten 429s every 0.8 s while the calls run, then calm
        end = time.monotonic() + 2.4
        while not stop.wait(0.8) and time.monotonic() < end:
            srv.gw.client.set_faults(rate_limit_next=10, retry_after=1)

    srv.gw.client.set_faults(rate_limit_next=10, retry_after=1)
    t = threading.Thread(target=bursts, daemon=True)
    t.start()
    t0 = time.monotonic()
    try:
        r = run(config(srv.gw, srv.llm, calls=10, duration=2.5, pace=0.01, flush=30))
    finally:
        stop.set()
        t.join()
    assert r.returncode == 0, r.stderr
    faults = injected(srv)
    check(srv, r, "F2 429 bursts, Retry-After: 1", t0, ambiguous=False)
    assert faults["rate_limit"] >= 10
    assert r.total("retries") == faults["rate_limit"]
    assert r.total("ambiguous_retries") == 0


@pytest.mark.timeout(90)
def test_F3_latency_past_the_read_timeout(srv: Servers) -> None:
    # Every attempt during the slow phase is committed by the gateway after the client gave up:
    # the retry doubles it. That is the documented at-least-once cost; it must be counted.
    srv.gw.client.set_faults(latency_ms=500)
    t0 = time.monotonic()
    proc = start(config(srv.gw, srv.llm, calls=10, duration=3, pace=0.01, flush=30,
                        meter={"read_timeout": 0.2}))
    deadline = time.monotonic() + 30
    while srv.gw.client.stats()["requests"] == 0:  # the slow phase starts with the first request
        assert time.monotonic() < deadline and proc.poll() is None, "nothing reached the gateway"
        time.sleep(0.02)
    time.sleep(1.5)
    srv.gw.client.clear_faults()
    r = finish(proc, 60)
    assert r.returncode == 0, r.stderr
    book = check(srv, r, "F3 latency 500 ms > read_timeout 200 ms (1.5 s)", t0, ambiguous=True,
                 settle=1.0)
    assert book.excess_rows > 0  # the cell really exercised the ambiguous path
    assert r.total("ambiguous_retries") >= book.excess_rows


@pytest.mark.timeout(90)
def test_F4_connection_dropped_mid_response(srv: Servers) -> None:
    srv.gw.client.set_faults(drop_rate=0.3, seed=3)  # dropped before processing: nothing to double
    t0 = time.monotonic()
    r = run(config(srv.gw, srv.llm, calls=200, flush=20))
    assert r.returncode == 0, r.stderr
    faults = injected(srv)
    check(srv, r, "F4 connection dropped mid-response (30%)", t0, ambiguous=False)
    assert faults["drop"] > 0
    assert r.total("ambiguous_retries") == faults["drop"]  # the client cannot tell: counted


@pytest.mark.timeout(120)
def test_F5_gateway_down_20s_then_back(srv: Servers) -> None:
    t0 = time.monotonic()
    proc = start(config(srv.gw, srv.llm, calls=10, duration=22, pace=0.05, flush=30,
                        meter={"max_backoff": 2.0, "max_retries": 100}))
    deadline = time.monotonic() + 30
    while not srv.gw.client.log(limit=1):
        assert time.monotonic() < deadline and proc.poll() is None, "nothing reached the gateway"
        time.sleep(0.05)
    srv.take_down()
    down_at = time.monotonic()
    time.sleep(20)
    srv.bring_up()
    down_for = time.monotonic() - down_at
    r = finish(proc, 60)
    assert r.returncode == 0, r.stderr
    check(srv, r, "F5 gateway down 20 s, then back", t0, ambiguous=True,
          note=f"down {down_for:.1f} s")
    # Retries probe the outage; new usage joins a held window instead of adding more retrying
    # requests (each 0.1 s window would otherwise add one per consumer: thousands of retries).
    assert 0 < r.total("retries") < 400


@pytest.mark.timeout(90)
def test_F6_processed_but_response_lost(srv: Servers) -> None:
    srv.gw.client.set_faults(lose_response_rate=0.2, seed=5)
    t0 = time.monotonic()
    r = run(config(srv.gw, srv.llm, calls=200, flush=20))
    assert r.returncode == 0, r.stderr
    lost = injected(srv)["lose_response"]
    book = check(srv, r, "F6 processed, response lost (20%)", t0, ambiguous=True)
    assert lost > 0
    # Each lost response was committed, then retried with the same key: exactly one extra row,
    # and exactly one ambiguous retry, per lost response.
    assert book.excess_rows == lost
    assert r.total("ambiguous_retries") == lost


@pytest.mark.timeout(90)
def test_F7_gateway_restarts_mid_run(srv: Servers) -> None:
    stop = threading.Event()
    restarts = []

    def restarter() -> None:
        while not stop.wait(0.7):
            srv.gw.restart()
            restarts.append(time.monotonic())

    t = threading.Thread(target=restarter, daemon=True)
    t0 = time.monotonic()
    proc = start(config(srv.gw, srv.llm, calls=10, duration=3, pace=0.005, flush=30))
    t.start()
    try:
        r = finish(proc, 60)
    finally:
        stop.set()
        t.join()
    assert r.returncode == 0, r.stderr
    check(srv, r, "F7 gateway restarted every 0.7 s", t0, ambiguous=True,
          note=f"{len(restarts)} restarts")
    assert len(restarts) >= 3


# -- P: process events, 30% 5xx at the gateway ------------------------------------------------------

@pytest.mark.timeout(90)
def test_P1_normal_exit_without_flush(srv: Servers) -> None:
    srv.gw.client.set_faults(**FIVE_XX)
    t0 = time.monotonic()
    r = run(config(srv.gw, srv.llm, calls=150, providers=PROVIDERS))  # no flush(): the exit hook
    assert r.returncode == 0, r.stderr
    check(srv, r, "P1 exit without flush()", t0, ambiguous=False)
    assert r.total("retries") > 0


@pytest.mark.timeout(90)
def test_P2_sigterm_with_the_opt_in_handler(srv: Servers) -> None:
    """The handler only asks for a flush and chains; the application's own handler re-raises the
    default action at once, so the usage waits on disk and the next start delivers it."""
    srv.gw.client.set_faults(**FIVE_XX)
    t0 = time.monotonic()
    cfg = config(srv.gw, srv.llm, mode="idle", calls=100,
                 meter={"handle_sigterm": True, "flush_interval": 30.0})
    proc = start(cfg)
    assert proc.stdout is not None
    lines = read_until(proc.stdout, lambda ls: ls and "phase" in ls[-1], 60)
    assert srv.gw.client.log() == []  # nothing sent yet
    proc.send_signal(signal.SIGTERM)
    killed = finish(proc, 30, lines)
    assert killed.returncode == -signal.SIGTERM  # the application's handler re-raised the default
    assert [s["exit"] for s in killed.lines if "exit" in s] == ["sigterm"]
    r = run({**cfg, "mode": "replay", "flush": 30})
    assert r.returncode == 0, r.stderr
    check(srv, r, "P2 SIGTERM (handle_sigterm=True) while idle, then a restart", t0, ambiguous=False)


def _spool_rows(path: str) -> int:
    """Usage records still waiting in the journals under the state directory ``path``."""
    from aerostack_meter._journal import recover
    from aerostack_meter._journal_format import parse

    left = 0
    for journal in Path(path).rglob("*.journal"):
        rec = recover(parse(journal.read_bytes(), final=True).records)
        left += len(rec.events) + len(rec.requests)
    return left


def _completed(lines: list[dict[str, Any]]) -> tuple[dict[str, int], int]:
    done: dict[str, int] = {}
    biggest = 0
    for line in lines:
        if "done" in line:
            done[line["done"]] = done.get(line["done"], 0) + line["units"]
            biggest = max(biggest, line["units"])
    return done, biggest


@pytest.mark.timeout(120)
def test_P3_kill_9_mid_run_then_restart_on_the_same_spool(srv: Servers, tmp_path: Path) -> None:
    """What the killed process saw complete is all delivered (it was journaled before the SDK
    call returned). The bound: the one call in flight at the kill may be journaled without its
    "done" line (gateway = printed + at most one call), and may have been answered by the LLM
    without being journaled (mock = gateway + at most one call)."""
    srv.gw.client.set_faults(**FIVE_XX)
    spool = str(tmp_path / "state")
    t0 = time.monotonic()
    cfg = config(srv.gw, srv.llm, mode="forever", print_calls=True, providers=PROVIDERS,
                 meter={"state_dir": spool})
    proc = start(cfg)
    assert proc.stdout is not None
    lines = read_until(proc.stdout, lambda ls: sum("done" in x for x in ls) >= 120, 60)
    proc.send_signal(signal.SIGKILL)
    killed = finish(proc, 10, lines)
    assert killed.returncode == -signal.SIGKILL
    assert _spool_rows(spool) > 0  # killed with usage still to send
    printed, biggest = _completed(killed.lines)

    r = run({**cfg, "mode": "replay", "print_calls": False, "flush": 30})
    assert r.returncode == 0, r.stderr
    assert _spool_rows(spool) == 0
    mock = expected_usage(srv.llm)
    book = ledger(srv.gw.client, 0.3)
    net = book.net
    record("P3 kill -9 mid-run, restart on the spool", mock, book, r, time.monotonic() - t0,
           note=f"LLM - net = {sum(mock.values()) - sum(net.values())} (bound: one call, <= {biggest})")
    assert all(net.get(c, 0) >= u for c, u in printed.items()), (net, printed)
    assert 0 <= sum(net.values()) - sum(printed.values()) <= biggest
    assert all(mock.get(c, 0) >= u for c, u in net.items()), (mock, net)
    assert 0 <= sum(mock.values()) - sum(net.values()) <= biggest
    assert sum(1 for c in mock if mock[c] != net.get(c, 0)) <= 1
    assert book.excess_rows <= r.total("ambiguous_retries")
    assert r.dropped() == {}


@pytest.mark.timeout(120)
def test_P3b_kill_9_while_a_delivered_request_waits_for_its_answer(srv: Servers, tmp_path: Path) -> None:
    """The ambiguous edge of kill -9: the gateway committed a batch and the process died before
    the answer came. The restart replays it with the same Idempotency-Key: a duplicate, which the
    restarted process counts in ``ambiguous_retries``."""
    srv.gw.client.set_faults(lose_response_next=1, lose_response_mode="delay",
                             lose_response_delay_ms=60_000)
    spool = str(tmp_path / "state")
    t0 = time.monotonic()
    cfg = config(srv.gw, srv.llm, mode="forever", print_calls=True,
                 meter={"state_dir": spool, "read_timeout": 30.0})
    proc = start(cfg)
    assert proc.stdout is not None
    lines = read_until(proc.stdout, lambda ls: sum("done" in x for x in ls) >= 20, 60)
    deadline = time.monotonic() + 20
    while injected(srv).get("lose_response", 0) < 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    killed = finish(proc, 10, lines)
    printed, biggest = _completed(killed.lines)

    r = run({**cfg, "mode": "replay", "print_calls": False, "flush": 30})
    assert r.returncode == 0, r.stderr
    book = ledger(srv.gw.client, 0.3)
    mock = expected_usage(srv.llm)
    record("P3b kill -9 with a committed request unanswered", mock, book, r, time.monotonic() - t0,
           note=f"LLM - net = {sum(mock.values()) - sum(book.net.values())} (bound: one call, <= {biggest})")
    # The held request is doubled; so may be others that were in flight at the kill. Each of
    # them was marked in flight in the spool, so the restart counted each replay as ambiguous.
    assert book.excess_rows >= 1
    assert r.total("ambiguous_retries") >= book.excess_rows
    net = book.net
    assert all(net.get(c, 0) >= u for c, u in printed.items()), (net, printed)
    assert 0 <= sum(net.values()) - sum(printed.values()) <= biggest


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.timeout(90)
def test_P4_fork_workers_after_init_in_the_parent(srv: Servers) -> None:
    srv.gw.client.set_faults(**FIVE_XX)
    t0 = time.monotonic()
    r = run(config(srv.gw, srv.llm, mode="fork", workers=4, calls=40, parent_calls=10,
                   meter={"flush_interval": 5.0}))  # the parent's usage is pending at the fork
    assert r.returncode == 0, r.stderr
    assert [x["workers"] for x in r.lines if "workers" in x] == [[0, 0, 0, 0]]
    assert sorted(x["exit"] for x in r.lines if "exit" in x) == ["normal"] + ["worker"] * 4
    check(srv, r, "P4 fork: init in parent, 4 workers", t0, ambiguous=False)
    assert r.total("calls_metered") == 10 + 4 * 40


@pytest.mark.timeout(120)
def test_P5_32_threads_and_1000_asyncio_tasks_at_once(srv: Servers) -> None:
    srv.gw.client.set_faults(**FIVE_XX)
    t0 = time.monotonic()
    r = run(config(srv.gw, srv.llm, mode="concurrent", threads=32, calls=5, tasks=1000,
                   providers=PROVIDERS, consumers=[f"usr_{i}" for i in range(8)], flush=30), 100)
    assert r.returncode == 0, r.stderr
    check(srv, r, "P5 32 threads + 1000 asyncio tasks", t0, ambiguous=False)
    assert r.total("calls_metered") == 32 * 5 + 1000


@pytest.mark.timeout(90)
def test_P6_queue_overflow_with_a_fast_producer(srv: Servers) -> None:
    srv.gw.client.set_faults(**FIVE_XX)
    t0 = time.monotonic()
    n = 20_000
    r = run(config(srv.gw, srv.llm, calls=100, extra_log=n, flush=30,
                   meter={"max_queue_size": 4, "durable": False}))
    assert r.returncode == 0, r.stderr
    check(srv, r, "P6 queue overflow (max_queue_size=4)", t0, ambiguous=False,
          extra={"bulk": sum(1 + j % 3 for j in range(n))})
    assert r.total("queue_overflows") > 0
