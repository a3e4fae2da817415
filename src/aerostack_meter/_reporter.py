"""The background reporter: a bounded queue in, coalesced batches out, retried until settled.

Caller side (any thread): ``put()`` is an O(1) append to a deque, never blocks and takes no lock.
One daemon reporter thread drains the queue every ``flush_interval`` (or when woken), sums events
with the same (consumerId, apiId, metric) into one batch, and hands batches to ``concurrency``
daemon sender threads that call the sink. Retries wait in a heap; every wait is an interruptible
``Event.wait``. While a key has a batch that failed and waits to retry, new usage of that key stays
in the window (one growing sum), so an outage costs one retrying request per key, not one per
window; the other keys are not held up by it. After ``os.fork()`` the child starts from fresh state (new locks, queue, sink
connections, threads); what the parent had pending is the parent's to send.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import queue
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from ._config import Settings
from ._events import UsageEvent, event_identity, idempotency_key
from ._log import log_limited, log_once, logger
from ._rejected import INSUFFICIENT_FUNDS, RejectedStore
from ._stats import Counters
from .sinks import Batch, SendResult, Sink

__all__ = ["Reporter"]

Key = tuple[str, str, str]
Expand = Callable[[Any], Iterable[UsageEvent]]


class _Flush:
    __slots__ = ("done", "target")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.target = -1


class _Acc:
    __slots__ = ("estimated", "estimated_units", "ids", "n", "price_table", "units")

    def __init__(self) -> None:
        self.units = 0
        self.n = 0
        self.ids: list[str] = []
        self.estimated = False
        self.estimated_units = 0
        self.price_table: str | None = None


class Reporter:
    def __init__(self, settings: Settings, sink: Sink, counters: Counters, expand: Expand) -> None:
        self.settings = settings
        self._rejected = RejectedStore(settings, counters)
        self.sink = sink
        self.counters = counters
        self._expand = expand
        self._max = settings.max_queue_size
        self._high_water = max(1, settings.max_queue_size // 2)
        self._reset()
        # The at-fork hook resets a forked child; the pid check in put() catches servers that fork
        # without running Python's fork hooks (it costs a getpid() system call, ~0.25 µs here).
        if hasattr(os, "register_at_fork"):
            import weakref

            ref = weakref.ref(self)

            def _child() -> None:
                r = ref()
                if r is not None:
                    r._forked()

            os.register_at_fork(after_in_child=_child)

    # -- state ------------------------------------------------------------------------------
    def _reset(self) -> None:
        self._pid = os.getpid()
        self._queue: deque[Any] = deque()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._started = False
        self._stopping = False
        self._closed = False
        self._overflow: dict[Key, list[int]] = {}
        self._window: dict[Key, _Acc] = {}
        self._send_q: queue.SimpleQueue[Batch | None] = queue.SimpleQueue()
        self._retry: list[tuple[float, int, Batch]] = []
        self._unsettled: dict[int, Batch] = {}
        self._seq = itertools.count(1)
        self._last_seq = 0
        self._low = 1  # every seq below this is settled
        self._waiters: list[_Flush] = []
        self._threads: list[threading.Thread] = []

    def _forked(self) -> None:
        if self._pid == os.getpid():
            return
        self._reset()
        try:
            self.sink.after_fork()
        except Exception:  # pragma: no cover - a custom sink's problem must not break the child
            logger.debug("sink.after_fork failed", exc_info=True)
        self.counters.after_fork()

    @property
    def pending(self) -> int:
        """Events not yet settled (queued, in the window, in flight or waiting to retry)."""
        with self._lock:
            unsettled = sum(b.n_events for b in self._unsettled.values())
            overflow = sum(v[1] for v in self._overflow.values())
        return len(self._queue) + sum(a.n for a in list(self._window.values())) + unsettled + overflow

    # -- caller side ------------------------------------------------------------------------
    def put(self, item: Any) -> None:
        """Hand one item (an event, or a call record the meter expands) to the reporter. O(1)."""
        if self._pid != os.getpid():
            self._forked()
        if not self._started:
            self._start()
        q = self._queue
        if len(q) >= self._max:
            self._on_overflow(item)
            return
        q.append(item)
        if len(q) >= self._high_water:
            self._wake.set()

    def _on_overflow(self, item: Any) -> None:
        # Keep the billing total, lose only the per-event detail.
        events = list(self._expand(item))
        with self._lock:
            for ev in events:
                acc = self._overflow.setdefault(ev.key, [0, 0])
                acc[0] += ev.units
                acc[1] += 1
        self.counters.add("queue_overflows", len(events))
        self.counters.add("events_enqueued", len(events))
        log_limited("queue_full", logging.WARNING,
                    "aerostack_meter: the event queue is full (max_queue_size=%d); units are kept "
                    "as running totals, per-event detail is lost", self._max)
        self._wake.set()

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything recorded so far; True when nothing is left pending."""
        if self._pid != os.getpid():
            self._forked()
        if not self._started or self._closed:
            return self.pending == 0
        marker = _Flush()
        self._queue.append(marker)
        self._wake.set()
        return marker.done.wait(timeout)

    def stop(self, timeout: float | None) -> bool:
        """Flush within ``timeout``, then stop the threads. Returns True if all was delivered."""
        if not self._started or self._closed:
            return True
        self._stopping = True
        ok = self.flush(timeout)
        self._closed = True
        for _ in self._threads:
            self._send_q.put(None)
        self._wake.set()
        if not ok:
            self._undelivered_at_stop()
        return ok

    def _undelivered_at_stop(self) -> None:
        lost = self.pending
        if lost:
            self.counters.drop("exit_timeout", lost)
            log_once("exit_lost", logging.WARNING,
                     "aerostack_meter: %d events could not be delivered before shutdown", lost)

    # -- reporter thread ----------------------------------------------------------------------
    def _start(self) -> None:
        with self._start_lock:
            if self._started:
                return
            threads = [threading.Thread(target=self._run, name="aerostack-meter-reporter", daemon=True)]
            for i in range(self.settings.concurrency):
                threads.append(threading.Thread(target=self._sender, name=f"aerostack-meter-sender-{i}",
                                                daemon=True))
            for t in threads:
                t.start()
            self._threads = threads
            self._started = True

    def _run(self) -> None:
        interval = self.settings.flush_interval
        coalesce = self.settings.coalesce
        next_window = time.monotonic() + interval
        while not self._closed:
            timeout = next_window - time.monotonic()
            with self._lock:
                if self._retry:
                    timeout = min(timeout, self._retry[0][0] - time.monotonic())
            if timeout > 0:
                self._wake.wait(timeout)
            self._wake.clear()
            try:
                flushes = self._drain()
                now = time.monotonic()
                if flushes or not coalesce or self._stopping or now >= next_window or self._overflow:
                    # a flush covers everything recorded: it holds nothing back
                    self._close_window(hold=not (flushes or self._stopping))
                    next_window = now + interval
                self._register(flushes)
                self._release_retries(now, everything=bool(flushes) and self._stopping)
            except Exception:  # never let the reporter die
                self.counters.add("internal_errors")
                log_limited("reporter_error", logging.ERROR, "aerostack_meter: reporter error",
                            exc_info=True)

    def _drain(self) -> list[_Flush]:
        flushes: list[_Flush] = []
        q = self._queue
        window = self._window
        n = 0
        while q:
            item = q.popleft()
            if type(item) is _Flush:
                flushes.append(item)
                continue
            for ev in self._expand(item):
                acc = window.get(ev.key)
                if acc is None:
                    acc = window[ev.key] = _Acc()
                acc.units += ev.units
                acc.n += 1
                acc.ids.append(event_identity(ev))
                if ev.estimated:
                    acc.estimated = True
                    acc.estimated_units += ev.units
                if ev.price_table is not None:
                    acc.price_table = ev.price_table
                n += 1
                if not self.settings.coalesce:
                    self._admit(ev.key, acc)
                    del window[ev.key]
        if n:
            self.counters.add("events_enqueued", n)
        return flushes

    def _close_window(self, hold: bool = False) -> None:
        with self._lock:
            overflow, self._overflow = self._overflow, {}
            failing = {(b.consumer_id, b.api_id, b.metric) for b in self._unsettled.values()
                       if b.attempts} if hold else ()
        for key, (units, n) in overflow.items():
            acc = self._window.setdefault(key, _Acc())
            acc.units += units
            acc.n += n
            acc.ids.append("overflow-" + uuid.uuid4().hex)
        window, self._window = self._window, {}
        for key, acc in window.items():
            if key in failing:  # its last batch failed: keep summing until that one settles
                self._window[key] = acc
            else:
                self._admit(key, acc)

    def _admit(self, key: Key, acc: _Acc) -> None:
        seq = next(self._seq)
        batch = Batch(key[0], key[1], key[2], acc.units, acc.n, idempotency_key(key, acc.ids),
                      seq=seq, first_attempt=time.monotonic(), estimated=acc.estimated,
                      estimated_units=acc.estimated_units, price_table=acc.price_table)
        with self._lock:
            self._unsettled[seq] = batch
            self._last_seq = seq
        self._send_q.put(batch)

    def _register(self, flushes: list[_Flush]) -> None:
        if not flushes:
            return
        with self._lock:
            for f in flushes:
                f.target = self._last_seq
                self._waiters.append(f)
            self._notify_locked()

    def _release_retries(self, now: float, everything: bool = False) -> None:
        with self._lock:
            due = []
            while self._retry and (everything or self._retry[0][0] <= now):
                due.append(heapq.heappop(self._retry)[2])
        for batch in due:
            self._send_q.put(batch)

    # -- sender threads -------------------------------------------------------------------------
    def _sender(self) -> None:
        while True:
            batch = self._send_q.get()
            if batch is None:
                return
            try:
                result = self.sink.send(batch)
            except Exception as exc:
                self.counters.add("internal_errors")
                log_limited("sink_error", logging.ERROR, "aerostack_meter: sink %r raised %s",
                            type(self.sink).__name__, type(exc).__name__)
                result = SendResult("retry", reason="sink_error")
            try:
                self._on_result(batch, result)
            except Exception:  # pragma: no cover
                self.counters.add("internal_errors")
                logger.debug("result handling failed", exc_info=True)

    def _on_result(self, batch: Batch, result: SendResult) -> None:
        if result.outcome == "ok":
            self.counters.sent(batch.metric, batch.units, batch.n_events)
            if result.reason:
                self.counters.add("odd_responses")
                log_once("ok_" + result.reason, logging.WARNING,
                         "aerostack_meter: the billing API accepted a request but answered oddly (%s)",
                         result.reason)
            self._settle(batch)
            return
        if result.outcome == "fatal" and result.reason == INSUFFICIENT_FUNDS:
            self._rejected.keep(batch, result)  # kept, never dropped: the provider was paid
            self._settle(batch)
            return
        if result.outcome == "fatal":
            self.counters.drop(result.reason or "rejected", batch.n_events)
            log_once("fatal_" + result.reason, logging.ERROR,
                     "aerostack_meter: the billing API rejected usage (%s): %s; not retried",
                     result.reason, result.message or "no message")
            self._settle(batch)
            return
        # A server that throttles and says when to come back (429 + Retry-After) is not failing:
        # waiting as told does not use up attempts, so a long rate limit never drops usage.
        if not (result.retry_after is not None and result.reason == "http_429"):
            batch.attempts += 1
        if batch.attempts > self.settings.max_retries and self._give_up(batch, result):
            return
        self.counters.add("retries")
        if result.ambiguous:
            batch.ambiguous_attempts += 1
            self.counters.add("ambiguous_retries")
        log_limited("retry_" + result.reason, logging.WARNING,
                    "aerostack_meter: delivery failed (%s); retrying with backoff", result.reason)
        if result.retry_after is not None:
            delay = result.retry_after
        else:
            s = self.settings
            delay = random.uniform(0, min(s.max_backoff, s.backoff_base * (2 ** min(batch.attempts, 30))))
        self._retry_later(batch, delay)

    def _give_up(self, batch: Batch, result: SendResult) -> bool:
        self.counters.drop("retries_exhausted", batch.n_events)
        log_limited("retries_exhausted", logging.ERROR,
                    "aerostack_meter: giving up on a batch after %d attempts (%s)",
                    batch.attempts, result.reason)
        self._settle(batch)
        return True

    def _retry_later(self, batch: Batch, delay: float) -> None:
        with self._lock:
            heapq.heappush(self._retry, (time.monotonic() + delay, batch.seq, batch))
        self._wake.set()

    def _settle(self, batch: Batch) -> None:
        with self._lock:
            self._unsettled.pop(batch.seq, None)
            self._notify_locked()

    def _notify_locked(self) -> None:
        while self._low <= self._last_seq and self._low not in self._unsettled:
            self._low += 1
        if self._waiters:
            keep = []
            for f in self._waiters:
                if f.target < self._low:
                    f.done.set()
                else:
                    keep.append(f)
            self._waiters = keep
