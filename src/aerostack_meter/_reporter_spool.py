"""The reporter in spool mode: events go to disk on the caller's thread, batches are formed,
sent and retried from the spool, so memory stays flat however long the billing API is away."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from ._log import log_limited, log_once
from ._reporter import Reporter
from ._spool import Spool
from .sinks import Batch, SendResult

__all__ = ["SpoolReporter"]

_ADOPT_EVERY = 5.0


class SpoolReporter(Reporter):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        s = self.settings
        assert s.spool_path is not None
        self.spool = Spool(s.spool_path, s.spool_max_bytes)
        if self._adopt() or any(self.spool.pending()):
            self._start()  # replay what an earlier process left

    def _reset(self) -> None:
        super()._reset()
        self._in_flight: set[int] = set()
        self._flush_now = False

    def _adopt(self) -> int:
        adopted = self.spool.adopt()
        replays, self.spool.adopted_in_flight = self.spool.adopted_in_flight, 0
        if replays:
            # A dead process was waiting for the answer to these: they may have been delivered.
            self.counters.add("retries", replays)
            self.counters.add("ambiguous_retries", replays)
            log_once("adopted_in_flight", logging.WARNING,
                     "aerostack_meter: replaying %d request(s) a dead process may have delivered "
                     "(same Idempotency-Key; may be counted twice)", replays)
        return adopted

    def _forked(self) -> None:
        if self._pid == os.getpid():
            return
        super()._forked()
        self.spool.after_fork()

    @property
    def pending(self) -> int:
        events, batches = self.spool.pending()
        return events + batches + len(self._queue)

    def put(self, item: Any) -> None:
        if self._pid != os.getpid():
            self._forked()
        if not self._started:
            self._start()
        events = list(self._expand(item))
        if not events:
            return
        self.counters.add("events_enqueued", len(events))
        if self.spool.full():
            self.counters.drop("spool_full", len(events))
            log_limited("spool_full", logging.WARNING,
                        "aerostack_meter: the spool %s is over spool_max_bytes; usage is dropped",
                        self.spool.path)
            return
        try:
            self.spool.append(events)
        except UnicodeEncodeError:  # an id that is not valid Unicode: no request could carry it
            self.counters.drop("unencodable", len(events))
            log_once("unencodable", logging.ERROR,
                     "aerostack_meter: a consumerId, apiId or metric is not valid Unicode "
                     "(unencodable); the event is dropped")
        except Exception as exc:
            self.counters.add("internal_errors")
            self.counters.drop("spool_error", len(events))
            log_limited("spool_append", logging.ERROR, "aerostack_meter: could not write the spool (%s)",
                        type(exc).__name__)

    def flush(self, timeout: float | None = None) -> bool:
        if self._pid != os.getpid():
            self._forked()
        if self._closed:
            timeout = 0
        deadline = None if timeout is None else time.monotonic() + timeout
        self._flush_now = True
        self._wake.set()
        while True:
            try:
                if not any(self.spool.pending()):
                    return True
            except Exception:
                return False
            if deadline is not None and time.monotonic() >= deadline:
                return False
            self._wake.set()
            time.sleep(0.01)

    def _undelivered_at_stop(self) -> None:
        log_once("left_in_spool", logging.WARNING,
                 "aerostack_meter: %d events left in the spool %s; the next start sends them",
                 self.pending, self.spool.path)

    def _run(self) -> None:
        interval = self.settings.flush_interval
        limit = self.settings.concurrency * 4
        next_window = 0.0
        next_adopt = time.monotonic() + _ADOPT_EVERY
        while not self._closed:
            try:
                now = time.monotonic()
                if now >= next_adopt:
                    self._adopt()
                    next_adopt = now + _ADOPT_EVERY
                if now >= next_window or self._flush_now:
                    # A key whose batch failed keeps its new events unclaimed until that batch
                    # settles (one retrying request per key in an outage); a flush claims all.
                    hold = not (self._flush_now or self._stopping)
                    self._flush_now = False
                    self.spool.claim(self.settings.coalesce, hold=hold)
                    next_window = now + interval
                with self._lock:
                    exclude = set(self._in_flight)
                due = self.spool.due(time.time(), limit - len(exclude), exclude)
                self.spool.sending(due)
                for batch in due:
                    with self._lock:
                        self._in_flight.add(batch.seq)
                    self._send_q.put(batch)
                nd = self.spool.next_due()
                wait = next_window - time.monotonic()
                if nd is not None:
                    wait = min(wait, nd - time.time())
                self._wake.wait(max(0.005, min(wait, interval)))
                self._wake.clear()
            except Exception:
                self.counters.add("internal_errors")
                log_limited("spool_reporter", logging.ERROR, "aerostack_meter: spool reporter error",
                            exc_info=True)
                time.sleep(min(interval, 1.0))

    # Outcomes: rows leave the spool only when settled.
    def _settle(self, batch: Batch) -> None:
        try:
            self.spool.done(batch)
        finally:
            with self._lock:
                self._in_flight.discard(batch.seq)
            self._wake.set()

    def _give_up(self, batch: Batch, result: SendResult) -> bool:
        return False  # durable: keep retrying at the backoff cap

    def _retry_later(self, batch: Batch, delay: float) -> None:
        try:
            self.spool.defer(batch, time.time() + delay)
        finally:
            with self._lock:
                self._in_flight.discard(batch.seq)
            self._wake.set()


