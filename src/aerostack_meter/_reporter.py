"""The delivery loop: records in from a store, coalesced requests out, retried until settled.

One loop for both stores (memory, journal). A daemon reporter thread reads the store every
``flush_interval`` (or when woken), sums events with the same (consumerId, apiId, metric) into one
request, and hands requests to ``concurrency`` daemon sender threads that call the sink. What to do
after an attempt is :func:`aerostack_meter._retry.decide`. Retries wait in a heap; every wait is an
interruptible ``Event.wait``. While a key has a request that failed and waits to retry, new usage
of that key stays in the window (one growing sum), so an outage costs one retrying request per key
and memory stays bounded by the number of keys. Transient failures are retried for as long as the
process lives. After ``os.fork()`` the child starts from fresh state (new locks, store, sink
connections, threads); what the parent had pending is the parent's to send.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from ._forkguard import no_fork
from ._journal_format import (
    B_ESTIMATED,
    B_INFLIGHT,
    EV_CALL,
    EV_ESTIMATED,
    EV_PRICED,
    BatchRec,
    Event,
)
from ._log import log_limited, log_once, logger
from ._rejected import INSUFFICIENT_FUNDS
from ._retry import RetryPolicy, decide
from ._stats import Counters
from ._store import JournalStore, MemoryStore
from .sinks import Batch, SendResult, Sink

__all__ = ["Reporter"]

Key = tuple[str, ...]  # (consumer, api, metric), and _MEMORY for events kept in memory
MAX_UNITS = 2**53 - 1  # the largest integer every JSON parser reads exactly
# How long stop() waits for the reporter thread's step in progress (a step reads and marks the
# journal on disk: it never waits on the network); past it, the next start's thread waits instead.
_STEP_WAIT = 10.0
_MEMORY = "memory"  # the 4th part of a window key whose events are in memory, not on disk
DeadLetter = Callable[[Batch, SendResult], bool]
Rejected = Callable[[Batch, SendResult, bool], None]  # the bool: kept as a dead letter


class _Flush:
    __slots__ = ("done", "mark", "target")

    def __init__(self, mark: Any) -> None:
        self.done = threading.Event()
        self.mark = mark
        self.target = -1


class _Acc:
    __slots__ = ("estimated", "estimated_units", "lo", "n", "price_table", "units")

    def __init__(self, lo: int) -> None:
        self.units = 0
        self.n = 0
        self.estimated = False
        self.estimated_units = 0
        self.price_table: str | None = None
        self.lo = lo  # journal offset of the first event summed here (-1: none from the journal)


class Reporter:
    """Delivers what ``store`` holds to ``sink``; see the module docstring."""

    def __init__(self, store: MemoryStore | JournalStore, sink: Sink, counters: Counters,
                 retry: RetryPolicy, *, flush_interval: float = 1.0, coalesce: bool = True,
                 concurrency: int = 4, dead_letter: DeadLetter | None = None,
                 rejected: Rejected | None = None,
                 expand_late: Callable[[Any], tuple[list[tuple[str, str, str, int, int]], float]]
                 | None = None,
                 poll: float | None = None,
                 refused: Callable[[str, int], None] | None = None,
                 delivered: Callable[[], None] | None = None) -> None:
        self.store = store
        self.sink = sink
        self.counters = counters
        self.retry = retry
        self.flush_interval = flush_interval
        self.coalesce = coalesce
        self.concurrency = concurrency
        self._dead_letter = dead_letter
        self._rejected = rejected
        self._expand_late = expand_late
        self._poll = poll
        self._refused_cb = refused  # (consumer id, units): a request refused for good
        self._delivered_cb = delivered  # each step, and an accepted request a flush() waits for: busy_consumers
        self.flush_requested = False  # set from a signal handler: no lock, no Event
        self._reset()

    # -- state ------------------------------------------------------------------------------
    def _reset(self) -> None:
        self._pid = os.getpid()
        self._late: list[Any] = []
        self._wake = threading.Event()
        self._lock = threading.RLock()  # (reentrant: a signal handler's flush() or stats() inside)
        self._start_lock = threading.Lock()
        self.started = False
        self._stopping = False
        self._deadline: float | None = None
        self.closed = False
        self._epoch = 0  # one more at each stop(): the threads of an earlier start end (see _run)
        self._left = 0  # durable: events read that stop() left in the closed journal (see _end_epoch)
        self.gave_up = 0  # events the meter's shutdown() counted dropped, kept in memory (see _start)
        self.kept = 0  # durable: events stop() kept in memory (no copy on disk; see _end_epoch)
        self._readopt = False  # durable, restarted: the first step adopts the closed journal
        self._window: dict[Key, _Acc] = {}
        self._closing: dict[Key, _Acc] = {}  # a window being formed into requests (busy_consumers)
        self._read_at = -math.inf  # when the last read of the store began (busy_consumers)
        self._send_q: queue.SimpleQueue[Batch | None] = queue.SimpleQueue()
        self._retry: list[tuple[float, int, Batch]] = []
        self._unsettled: dict[int, Batch] = {}
        self._seq = itertools.count(1)
        self._last_seq = 0
        self._low = 1  # every seq below this is settled
        self._waiters: list[_Flush] = []
        self._unformed: list[tuple[Batch, int, int, bool]] = []  # requests whose record waits for the disk
        self._in_memory: set[int] = set()  # seqs of requests for events kept in memory (no disk copy)
        self._pending_flushes: list[_Flush] = []
        self._threads: list[threading.Thread] = []
        self._senders = False
        self.paused_until = 0.0
        self._cold = True  # no send made yet in this process (see _forkguard)

    def forked(self) -> None:
        """Called in a forked child (by the at-fork hook, or by the pid check of a store put)."""
        if self._pid == os.getpid():
            return
        self._reset()
        self.store.after_fork()
        try:
            self.sink.after_fork()
        except Exception:  # pragma: no cover - a custom sink's problem must not break the child
            logger.debug("sink.after_fork failed", exc_info=True)
        self.counters.after_fork()

    @property
    def paused(self) -> bool:
        return self.paused_until > time.monotonic()

    @property
    def pending(self) -> int:
        """Events not yet settled (unread, in the window, in flight or waiting to retry)."""
        with self._lock:
            unsettled = sum(b.n_events for b in self._unsettled.values())
        window = sum(a.n for a in list(self._window.values()))
        try:
            unread = self.store.unread()
        except OSError:
            unread = 0
        return unread + window + unsettled + len(self._late) + self._left

    # -- caller side ------------------------------------------------------------------------
    def put_late(self, item: Any) -> None:
        """A GC-finalized stream: estimated on the reporter thread (a finalizer does no work)."""
        self._late.append(item)
        self._wake.set()

    def ensure_started(self) -> bool:
        """Start the threads if needed; False when they cannot run (interpreter shutting down)."""
        if self._pid != os.getpid():
            self.forked()
        if self.started and not self.closed:
            return True
        return self._start()

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything recorded so far; True when nothing is left pending."""
        if self._pid != os.getpid():
            self.forked()
        if not self.started or self.closed:
            return self.pending == 0
        epoch = self._epoch
        # (None: taken by the step that adopts what a stop() left, see _adopt_left)
        marker = _Flush(None if self._readopt else self.store.mark())
        with self._lock:
            self._pending_flushes.append(marker)
        self._wake.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            step = 0.05 if deadline is None else min(0.05, deadline - time.monotonic())
            if step <= 0:
                return marker.done.is_set()
            if marker.done.wait(step):
                return True
            if self.paused:
                return False  # the destination refuses our key: nothing moves until it is fixed
            if self._epoch != epoch:
                return False  # stop() ended delivery with this flush's usage undelivered

    def stop(self, timeout: float | None) -> tuple[bool, int]:
        """Flush within ``timeout``, then stop the threads. Returns (all delivered, events left)."""
        if not self.started or self.closed:
            left = self.pending
            self.store.close(settled=left == 0)
            return left == 0, left
        self._stopping = True
        self._deadline = None if timeout is None else time.monotonic() + timeout
        adopt = getattr(self.store, "adopt", None)
        if adopt is not None:  # what children (a pool's workers) left: delivered in this flush too
            try:
                adopt()
            except Exception:  # pragma: no cover - adopt() counts and logs its own problems
                self.counters.add("internal_errors")
        self._wake.set()
        ok = self.flush(None if self._deadline is None else max(0.0, self._deadline - time.monotonic()))
        self.closed = True
        for _ in range(len(self._threads) - 1):
            self._send_q.put(None)
        self._wake.set()
        for i, t in enumerate(self._threads):
            if t is not threading.current_thread():
                # the reporter's step in progress ends before the store closes under it (it may
                # be reading or marking the journal); a sender may be inside a request: its
                # answer is ignored (see _current)
                t.join(_STEP_WAIT if i == 0 else 0.2)
        left = self.pending
        ok = ok and left == 0
        self.store.close(settled=ok)
        self._end_epoch()
        self.started = False
        self._stopping = False
        self._deadline = None
        return ok, left

    def _end_epoch(self) -> None:
        """After stop(): a thread of this start that did not end within the join (a step or a
        send still running) ends when it next looks, and never runs beside the next start's. In
        durable mode the closed journal holds every request not settled and every event not sent
        (the next start adopts it, or another process does): the copies in memory are dropped,
        and a late answer to a request sent before is ignored (see _current), so nothing goes out
        twice. In memory mode they are the only copy: kept, and delivered on the next start."""
        self._epoch += 1
        if not self.store.durable:
            return
        # Events a full disk kept in memory (their window sums and requests) have no copy on
        # disk: kept here, like memory mode's (the meter counts them dropped until delivered).
        window: dict[Key, _Acc] = {k: a for k, a in self._window.items() if len(k) == 4}
        with self._lock:
            kept = {s: b for s, b in self._unsettled.items() if s in self._in_memory}
            # (pending counts the rest until the next start adopts it; the unread ones it reads)
            self._left = (sum(b.n_events for s, b in self._unsettled.items() if s not in kept)
                          + sum(a.n for k, a in list(self._window.items()) if k not in window))
            self.kept = sum(b.n_events for b in kept.values()) + sum(a.n for a in window.values())
            self._unsettled = kept
            self._in_memory = set(kept)
            self._retry = [r for r in self._retry if r[1] in kept]
            heapq.heapify(self._retry)
            self._unformed = []
            self._waiters = []  # (their flush() returns False: see the epoch there)
            self._pending_flushes = []
            self._low = min(kept, default=self._last_seq + 1)
        self._window = window
        self._closing = {}

    def _current(self, batch: Batch) -> bool:
        """(A sender) ``batch`` is to be delivered: not one a stop() left to the journal."""
        if not self.store.durable:
            return True
        with self._lock:
            return batch.seq in self._unsettled

    # -- reporter thread ----------------------------------------------------------------------
    def _start(self) -> bool:
        with self._start_lock:
            if self.started and not self.closed:
                return True
            if self.closed:
                # used again after stop(): a fresh loop over the same store and sink (durable:
                # its first step adopts the journal stop() closed, see _adopt_left)
                old_q, self._send_q = self._send_q, queue.SimpleQueue()
                self._carry_queued(old_q)
                self.closed = False
                self._readopt = self.store.durable
                with self._lock:  # what stop() kept in memory is tried again now, not at its backoff
                    now = time.monotonic()
                    self._retry = [(now, seq, b) for _due, seq, b in self._retry]
                    heapq.heapify(self._retry)
                if self.gave_up:  # kept in memory after all, delivered now
                    self.counters.undrop("exit_timeout", self.gave_up)
                    self.gave_up = 0
                self.kept = 0
            if sys.is_finalizing():
                return False
            previous = self._threads[0] if self._threads else None
            thread = threading.Thread(target=self._run, args=(self._epoch, previous),
                                      name="aerostack-meter-reporter", daemon=True)
            try:
                thread.start()
            except RuntimeError:  # "can't create new thread at interpreter shutdown"
                return False
            self._threads = [thread]
            self._senders = False
            self.started = True
            return True

    def _carry_queued(self, old_q: queue.SimpleQueue[Batch | None]) -> None:
        """(A restart) Requests still queued for the earlier start's senders (one the reporter
        queued after stop() told them to end would wait there for ever) go to the new queue; the
        earlier senders' end markers stay in theirs."""
        ends = 0
        while True:
            try:
                item = old_q.get_nowait()
            except queue.Empty:
                break
            if item is None:
                ends += 1
            elif self._current(item):
                self._send_q.put(item)
        for _ in range(ends):
            old_q.put(None)

    def _start_senders(self) -> None:
        """The sender threads start with the first request (a process that records nothing has
        only the reporter thread, which adopts what dead processes leave)."""
        with self._start_lock:
            if self._senders:
                return
            threads = [threading.Thread(target=self._sender, args=(self._send_q,), name=f"aerostack-meter-sender-{i}",
                                        daemon=True) for i in range(self.concurrency)]
            for t in threads:
                t.start()
            self._threads.extend(threads)
            self._senders = True

    def _run(self, epoch: int, previous: threading.Thread | None = None) -> None:
        if previous is not None and previous is not threading.current_thread():
            previous.join()  # a step of the start before, still running past stop(): never two at once
        interval = self.flush_interval
        next_window = time.monotonic() + interval
        while not self.closed and self._epoch == epoch:
            timeout = next_window - time.monotonic()
            with self._lock:
                if self._retry:
                    timeout = min(timeout, self._retry[0][0] - time.monotonic())
            if self._poll is not None:
                timeout = min(timeout, self._poll)
            if timeout > 0 and not self.flush_requested:
                self._wake.wait(timeout)
            self._wake.clear()
            try:
                self._step(next_window)
                now = time.monotonic()
                if now >= next_window:
                    next_window = now + interval
            except BaseException:  # never let the reporter die
                self.counters.add("internal_errors")
                log_limited("reporter_error", logging.ERROR, "aerostack_meter: reporter error",
                            exc_info=True)
                time.sleep(min(interval, 0.5))

    def _adopt_left(self, flushes: list[_Flush]) -> None:
        """The first step after a restart: what the stop() before left in the journal it closed
        is adopted now (not at the next adoption pass, seconds later), then counted as unread;
        a flush() called meanwhile covers it."""
        adopt = getattr(self.store, "adopt", None)
        if adopt is not None:
            try:
                adopt()
            except Exception:  # pragma: no cover - adopt() counts and logs its own problems
                self.counters.add("internal_errors")
            if getattr(self.store, "adopt_failed", False):
                return  # (a full disk) the next step tries again; pending and flush() wait
        self._left = 0
        self._readopt = False
        for f in flushes:
            if f.mark is None:
                f.mark = self.store.mark()

    def _step(self, next_window: float) -> None:
        with self._lock:
            flushes, self._pending_flushes = self._pending_flushes, []
        if self._readopt or any(f.mark is None for f in flushes):
            self._adopt_left(flushes)
        if not self._senders and (self._retry or not self._send_q.empty()):
            self._start_senders()  # (a restart: requests kept or carried over wait for senders)
        if self.flush_requested:
            self.flush_requested = False
            flushes.append(_Flush(self.store.mark()))
        self._expand_late_items()
        if self._unformed:
            self._form_held()
        read_at = time.monotonic()  # after this step's settlements: their records are read below
        self._read()
        self._read_at = read_at  # (published once read: busy_consumers must see them summing)
        store = self.store
        ready = [f for f in flushes if f.mark is not None and store.reached(f.mark)]
        later = [f for f in flushes if f not in ready]  # (a mark still None waits for _adopt_left)
        if later:
            with self._lock:
                self._pending_flushes.extend(later)
            if not (store.stalled or self._unformed or self._readopt):  # (then the next step comes at the interval)
                self._wake.set()
        now = time.monotonic()
        if ready or not self.coalesce or self._stopping or now >= next_window:
            self._close_window(hold=not (ready or self._stopping))
        self._tell_delivered()  # (before a flush() this step completes returns)
        self._register(ready)
        self._release_retries(now, everything=bool(ready) and self._stopping)
        idle = not self._unsettled and not self._window and not self._retry
        try:
            if not idle and store.crowded():
                self._compact()
            store.maintain(idle)
        except OSError:
            self.counters.add("journal_errors")

    def _compact(self) -> None:
        """The journal grew by ``spool_max_bytes`` while never all settled (a steady load, an
        outage): carry the unsettled requests and the open sums into a new segment
        (``JournalStore.compact``); the sums go on summing there."""
        if self._unformed or self._readopt:
            return
        with self._lock:
            unsettled = [b for s, b in self._unsettled.items() if s not in self._in_memory]
        accs = [(key, acc) for key, acc in self._window.items() if len(key) == 3]  # (not _MEMORY)
        offsets = self.store.compact(unsettled, [
            (key, acc.units, acc.estimated_units, acc.estimated, acc.price_table is not None) for key, acc in accs])
        if offsets is not None:
            for (_key, acc), lo in zip(accs, offsets, strict=True):
                acc.lo = lo

    def _expand_late_items(self) -> None:
        if not self._late or self._expand_late is None:
            return
        items, self._late = self._late, []
        for item in items:
            try:
                events, ts = self._expand_late(item)
                if events:
                    self.store.put_many(events, ts)
            except UnicodeEncodeError:
                self.counters.drop("unencodable")
            except BaseException:
                self.counters.add("internal_errors")

    def _read(self) -> None:
        window = self._window
        n = calls = estimated = 0
        for rec in self.store.read():
            if isinstance(rec, Event):
                # (events kept in memory, a write of theirs failed, sum apart: their request
                # needs no record on disk, so a full disk never holds them back; see formed())
                key = (rec.consumer_id, rec.api_id, rec.metric) if rec.offset >= 0 else \
                    (rec.consumer_id, rec.api_id, rec.metric, _MEMORY)
                acc = window.get(key)
                if acc is None:
                    acc = window[key] = _Acc(rec.offset)
                elif acc.units + rec.units > MAX_UNITS:  # each request exact
                    self._admit(key, window.pop(key), hi=rec.offset if rec.offset >= 0 else self._read_pos())
                    acc = window[key] = _Acc(rec.offset)
                elif acc.lo < 0:
                    acc.lo = rec.offset
                acc.units += rec.units
                acc.n += 1
                if rec.flags & EV_ESTIMATED:
                    acc.estimated = True
                    acc.estimated_units += rec.units
                if rec.flags & EV_PRICED:
                    acc.price_table = self.counters.price_table
                if rec.flags & EV_CALL:  # the event of a call metered with the default policy
                    calls += 1
                    if rec.flags & EV_ESTIMATED:
                        estimated += 1
                n += 1
                if not self.coalesce:
                    self._admit(key, window.pop(key), hi=rec.offset + 1)
            elif rec.kind == "O":  # memory overflow: a per-key sum
                key = (rec.consumer_id, rec.api_id, rec.metric, _MEMORY)
                acc = window.setdefault(key, _Acc(-1))
                acc.units += rec.units
                acc.n += rec.n_events
                if rec.flags & EV_ESTIMATED:
                    acc.estimated = True
                n += rec.n_events
            else:  # "P": a request formed by another process; replayed with its own key
                self._admit_preformed(rec)
        if n:
            self.counters.add("events_enqueued", n)
        if calls:
            self.counters.add("calls_metered", calls)
        if estimated:
            self.counters.add("events_estimated", estimated)

    def _close_window(self, hold: bool = False) -> None:
        with self._lock:
            failing = {(b.consumer_id, b.api_id, b.metric) for b in self._unsettled.values()
                       if b.attempts} if hold else ()
        self._closing = window = self._window  # (first: busy_consumers reads the window, then this)
        self._window = {}
        hi = self._read_pos()
        for key, acc in window.items():
            if key[:3] in failing:  # its last request failed: keep summing until that one settles
                self._window[key] = acc
            else:
                self._admit(key, acc, hi=hi)
        self._closing = {}

    def _keep_dead(self, batch: Batch, result: SendResult) -> bool:
        """Into the dead-letter store (the state directory); False when there is none or it fails."""
        if self._dead_letter is None:
            return False
        try:
            return bool(self._dead_letter(batch, result))
        except Exception:
            return False

    def _read_pos(self) -> int:
        store = self.store
        return store.journal.read_pos if isinstance(store, JournalStore) else 0

    def _new_batch(self, key: Key, units: int, n: int, idem: str | None, estimated: bool,
                   estimated_units: int) -> Batch:
        seq = next(self._seq)
        return Batch(key[0], key[1], key[2], units, n, idem or f"am-{self.store.token}-{seq}",
                     seq=seq, first_attempt=time.monotonic(), estimated=estimated,
                     estimated_units=estimated_units)

    def _admit(self, key: Key, acc: _Acc, hi: int) -> None:
        batch = self._new_batch(key, acc.units, acc.n, None, acc.estimated, acc.estimated_units)
        batch.price_table = acc.price_table
        lo = acc.lo if acc.lo >= 0 else hi
        if len(key) == 4:  # (_MEMORY)
            with self._lock:
                self._in_memory.add(batch.seq)
        self._enqueue(batch, lo, max(hi, lo))

    def _admit_preformed(self, rec: BatchRec) -> None:
        key = (rec.consumer_id, rec.api_id, rec.metric)
        estimated = bool(rec.flags & B_ESTIMATED)
        batch = self._new_batch(key, rec.units, rec.n_events, rec.idempotency_key, estimated,
                                rec.units if estimated else 0)
        if rec.flags & B_INFLIGHT:
            # a dead process may have had this request processed: the replay may count twice
            batch.attempts = 1
            batch.ambiguous_attempts = 1
            self.counters.add("retries")
            self.counters.add("ambiguous_retries")
            log_once("adopted_in_flight", logging.WARNING,
                     "aerostack_meter: replaying request(s) a dead process may have delivered "
                     "(same Idempotency-Key; may be counted twice)")
        self.counters.add("events_enqueued", rec.n_events)
        self._enqueue(batch, 0, 0, preformed=True)

    def _enqueue(self, batch: Batch, lo: int, hi: int, preformed: bool = False) -> None:
        """Journal and send ``batch``, formed from the events at offsets [lo, hi) (see
        :meth:`_form`)."""
        if not self._senders:
            self._start_senders()
        with self._lock:
            self._unsettled[batch.seq] = batch
            self._last_seq = batch.seq
        self._form(batch, lo, hi, preformed)

    def _form(self, batch: Batch, lo: int, hi: int, preformed: bool) -> None:
        """Send ``batch`` once its request is journaled; while that cannot be written (a full
        disk) it waits, tried again each step (:meth:`_form_held`)."""
        if self.store.formed(batch, lo, hi, preformed):
            self._dispatch(batch)
        else:
            self._unformed.append((batch, lo, hi, preformed))

    def _dispatch(self, batch: Batch) -> None:
        if self.paused:
            self._retry_later(batch, self.paused_until - time.monotonic())
        else:
            self._send_q.put(batch)

    def _register(self, flushes: list[_Flush]) -> None:
        if not flushes:
            return
        with self._lock:
            for f in flushes:
                f.target = self._last_seq
                self._waiters.append(f)
            self._notify_locked()

    def _form_held(self) -> None:
        """(Each step) Journal the requests whose record could not be written (a full disk), and
        send those that now are."""
        held, self._unformed = self._unformed, []
        for batch, lo, hi, preformed in held:
            if self._current(batch):
                self._form(batch, lo, hi, preformed)

    def _release_retries(self, now: float, everything: bool = False) -> None:
        paused = self.paused
        with self._lock:
            due = []
            while self._retry and (self._retry[0][0] <= now or (everything and not paused)):
                due.append(heapq.heappop(self._retry)[2])
        for batch in due:
            self._send_q.put(batch)

    # -- sender threads -------------------------------------------------------------------------
    def _sender(self, send_q: queue.SimpleQueue[Batch | None]) -> None:
        while True:
            batch = send_q.get()  # (its start's queue: the next start makes another)
            if batch is None:
                return
            if not self._current(batch):
                continue
            try:
                self._deliver(batch)
            except BaseException:  # pragma: no cover - never let a sender die
                self.counters.add("internal_errors")
                logger.debug("delivery failed", exc_info=True)

    def _deliver(self, batch: Batch) -> None:
        if self.paused:
            self._retry_later(batch, self.paused_until - time.monotonic())
            return
        if batch.attempts and not self.store.attempt(batch):
            self._retry_later(batch, self.flush_interval)  # (sent once that is journaled)
            return
        try:
            if self._cold:
                with no_fork():  # a first send imports lazily: a fork now would hang the child
                    result = self.sink.send(batch)
                self._cold = False
            else:
                result = self.sink.send(batch)
        except Exception as exc:
            self.counters.add("internal_errors")
            log_limited("sink_error", logging.ERROR, "aerostack_meter: sink %r raised %s",
                        type(self.sink).__name__, type(exc).__name__)
            result = SendResult("retry", reason="sink_error")
        if self._current(batch):  # (else stop() left it to the journal meanwhile)
            self._on_result(batch, result)

    def _on_result(self, batch: Batch, result: SendResult) -> None:
        budget = None
        if self._stopping and self._deadline is not None:
            budget = max(0.0, self._deadline - time.monotonic())
        attempts = batch.attempts + (0 if result.outcome == "ok" else 1)
        decision = decide(result, attempts, self.retry, budget=budget)
        if decision.action == "done":
            self.store.key_answer(True)
            self.counters.sent(batch.metric, batch.units, batch.n_events)
            if self.closed and self.gave_up:  # a sender still in its request when stop() gave up
                n = min(self.gave_up, batch.n_events)
                self.gave_up -= n
                self.counters.undrop("exit_timeout", n)
            if result.reason:
                self.counters.add("odd_responses")
                log_once("ok_" + result.reason, logging.WARNING,
                         "aerostack_meter: the billing API accepted a request but answered oddly (%s)",
                         result.reason)
            self.store.settled(batch, dead=False)
            # a flush() waiting for this request returns once the budget was told; without one,
            # the step tells (busy_consumers is a pass over the pending requests: once a step)
            if self._delivered_cb is not None and self._waiters:
                with self._lock:
                    self._unsettled.pop(batch.seq, None)
                self._tell_delivered()
            self._settle(batch)
            return
        if decision.action == "dead" and self._refused_cb is not None:
            self._tell(self._refused_cb, batch.consumer_id, batch.units)
        if decision.action == "dead" and result.reason == INSUFFICIENT_FUNDS and self._rejected:
            # kept, never dropped (the provider was paid): as a dead letter, which `drain
            # --retry-dead` resends once the wallet is topped up; the app is told
            self._rejected(batch, result, self._keep_dead(batch, result))
            self.store.settled(batch, dead=True)
            self._settle(batch)
            return
        if decision.action == "dead":
            if self._keep_dead(batch, result):
                self.counters.add("dead_lettered", batch.n_events)
                log_once("dead_" + result.reason, logging.ERROR,
                         "aerostack_meter: the billing API refused usage (%s): %s; kept in the "
                         "dead-letter store (list it with `aerostack-meter report --dead-letters`, "
                         "resend it with `aerostack-meter drain --retry-dead`)", result.reason,
                         result.message or "no message")
            else:
                self.counters.drop(result.reason or "rejected", batch.n_events)
                log_once("fatal_" + result.reason, logging.ERROR,
                         "aerostack_meter: the billing API rejected usage (%s): %s; not retried",
                         result.reason, result.message or "no message")
            self.store.settled(batch, dead=True)
            self._settle(batch)
            return
        if decision.action == "pause":
            self.store.key_answer(False)
            now = time.monotonic()
            with self._lock:  # one pause, however many requests were in flight when it began
                newly = self.paused_until <= now
                self.paused_until = now + decision.delay
            if newly:
                self.counters.add("paused_count")
            fp = getattr(self.sink, "key_fingerprint", None)
            log_once("pause_" + result.reason, logging.ERROR,
                     "aerostack_meter: the billing API refused the API key (%s: %s). Delivery is "
                     "paused and usage is kept%s; set the right key (AEROSTACK_API_KEY) and restart, "
                     "or run `aerostack-meter drain`%s", result.reason, result.message or "no message",
                     " on disk" if self.store.durable else " in memory (lost at exit: durable=False)",
                     f" (usage kept under this key, fingerprint {fp}, is delivered with the right "
                     f"one by `aerostack-meter drain --adopt-key {fp}`)"
                     if self.store.durable and isinstance(fp, str) else "")
            self.store.failed(batch)
            self._retry_later(batch, decision.delay)
            return
        # retry. A server that throttles and says when to come back (429 + Retry-After) is not
        # failing: its attempts are not counted against the backoff.
        if not (result.retry_after is not None and result.reason == "http_429"):
            batch.attempts += 1
        self.counters.add("retries")
        if result.ambiguous:
            batch.ambiguous_attempts += 1
            self.counters.add("ambiguous_retries")
        else:
            self.store.failed(batch)
        log_limited("retry_" + result.reason, logging.WARNING,
                    "aerostack_meter: delivery failed (%s); retrying with backoff", result.reason)
        self._retry_later(batch, decision.delay)

    def busy_consumers(self) -> tuple[set[str], float]:
        """The consumers with usage read and not yet delivered (summing, being formed into
        requests, in flight or waiting to be retried), and when the last read of the store began:
        every other consumer's usage read by then has been delivered (or refused for good)."""
        read_at = self._read_at
        busy = {key[0] for key in list(self._window)}
        busy.update(key[0] for key in list(self._closing))  # (after the window: see _close_window)
        with self._lock:
            busy.update(b.consumer_id for b in self._unsettled.values())
        return busy, read_at

    def _tell_delivered(self) -> None:
        if self._delivered_cb is not None:
            self._tell(self._delivered_cb)

    def _tell(self, fn: Callable[..., None], *args: Any) -> None:
        """The meter's callback (budgets): a bug there costs the count, never the reporter."""
        try:
            fn(*args)
        except Exception:
            self.counters.add("internal_errors")

    def _retry_later(self, batch: Batch, delay: float) -> None:
        with self._lock:
            if self.store.durable and batch.seq not in self._unsettled:
                return  # stop() left it to the journal meanwhile (see _end_epoch)
            heapq.heappush(self._retry, (time.monotonic() + max(0.0, delay), batch.seq, batch))
            if self.paused:
                self._notify_locked()
        self._wake.set()

    def _settle(self, batch: Batch) -> None:
        with self._lock:
            self._unsettled.pop(batch.seq, None)
            self._in_memory.discard(batch.seq)
            self._notify_locked()
        self._wake.set()

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
