"""Counters kept by the meter and the typed snapshot ``stats()`` returns."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = ["Counters", "Stats"]


@dataclass(frozen=True)
class Stats:
    """A snapshot of the meter's counters (all since the process, or its fork, started)."""

    events_enqueued: int = 0
    events_sent: int = 0
    requests_sent: int = 0
    units_sent: Mapping[str, int] = field(default_factory=dict)
    retries: int = 0
    ambiguous_retries: int = 0
    dropped: Mapping[str, int] = field(default_factory=dict)
    calls_metered: int = 0
    events_estimated: int = 0
    #: calls the meter saw but could not bill (the sum of ``missing``)
    usage_missing: int = 0
    #: ``usage_missing`` by reason: ``no_usage`` (the response or stream carried none),
    #: ``raw_unread`` (a raw response closed before its body was read)
    missing: Mapping[str, int] = field(default_factory=dict)
    #: streamed calls retried without the injected ``stream_options`` after the server refused it
    #: (billed from an estimate; the destination is remembered)
    stream_options_rejected: int = 0
    missing_consumer: int = 0
    queue_overflows: int = 0
    internal_errors: int = 0
    #: requests the billing API accepted (2xx) with an empty, oversized or non-JSON body
    odd_responses: int = 0
    #: events not delivered yet (unread, being summed, in flight or waiting to retry)
    pending: int = 0
    #: of ``pending``, the events kept on disk (durable mode)
    spooled: int = 0
    #: events the billing API refused for lack of funds (402): kept locally, passed to on_rejected
    rejected: int = 0
    #: calls refused before sending because their worst case did not fit the budget
    budget_refused: int = 0
    #: budget lookups that failed (source error, timeout, unpriced model), per on_budget_error
    budget_errors: int = 0
    #: calls a cost policy could not price (model not in the table): billed under its fallback
    unpriced: int = 0
    #: calls metered with a cost policy that this process could not price (another process
    #: journaled them; the price table, the ``[cost]`` extra, is not installed here): kept on disk
    #: for a process that can, never dropped
    awaiting_price: int = 0
    #: events that processes using another API key left for this destination (base URL) in the
    #: state directory, as of this meter's start: never sent with this key; kept on disk for that
    #: key (``AEROSTACK_API_KEY=<that key> aerostack-meter drain``), never dropped
    awaiting_key: int = 0
    #: the price table in use when a cost policy is configured or has priced a call
    price_table: str | None = None
    #: undelivered records kept in the Redis stream past its ``maxlen`` (never trimmed; see
    #: docs/scaling.md), as of the last cap check
    over_cap: int = 0
    #: events the billing API refused for good (400, 404, ...), kept in the dead-letter store
    dead_lettered: int = 0
    #: events taken over from processes that died (or exited) before delivering them
    events_adopted: int = 0
    #: journal or state-directory writes that failed (a record then waits in memory)
    journal_errors: int = 0
    #: times the journal could not be memory-mapped (no ``posix_fallocate`` on its filesystem, no
    #: memory, a full disk when it grows): it is written with one ``write()`` per call instead,
    #: as durable, a few microseconds slower
    journal_unmapped: int = 0
    #: times the journal was compacted: a new file holding only what is not settled (the
    #: requests, the open sums, what was not read yet), when everything was settled past 1 MiB
    #: or it grew by ``spool_max_bytes``
    journal_compactions: int = 0
    #: damaged state files renamed aside (``*.corrupt-*``)
    state_files_quarantined: int = 0
    #: times the billing API refused the API key (401/403): delivery paused, usage kept
    paused_count: int = 0
    #: usage is journaled on disk before each call returns (False: memory only)
    durable: bool = False
    #: delivery is paused now because the API refused the key
    paused: bool = False

    @property
    def events_dropped(self) -> int:
        return sum(self.dropped.values())


_INT_FIELDS = (
    "events_enqueued", "events_sent", "requests_sent", "retries", "ambiguous_retries",
    "calls_metered", "events_estimated", "usage_missing", "stream_options_rejected", "missing_consumer",
    "queue_overflows", "internal_errors", "odd_responses", "unpriced", "budget_refused", "budget_errors",
    "rejected", "dead_lettered", "events_adopted", "journal_errors", "journal_unmapped",
    "journal_compactions", "state_files_quarantined",
    "paused_count", "awaiting_price",
)


class Counters:
    """Mutable counters. Increments take a lock: none of them is on a per-chunk path."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ints: Counter[str] = Counter()
        self._units: Counter[str] = Counter()
        self._dropped: Counter[str] = Counter()
        self._missing: Counter[str] = Counter()
        self.price_table: str | None = None
        self._gauges: dict[str, int] = {}

    def set_gauge(self, name: str, value: int) -> None:
        self._gauges[name] = value

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._ints[name] += n

    def sent(self, metric: str, units: int, events: int) -> None:
        with self._lock:
            self._units[metric] += units
            self._ints["events_sent"] += events
            self._ints["requests_sent"] += 1

    def missing(self, reason: str) -> None:
        with self._lock:
            self._ints["usage_missing"] += 1
            self._missing[reason] += 1

    def drop(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self._dropped[reason] += n

    def undrop(self, reason: str, n: int) -> None:
        """``n`` events counted as dropped were kept after all (a meter used again after
        ``shutdown()`` delivers what that shutdown gave up on and kept in memory)."""
        with self._lock:
            self._dropped[reason] -= n
            if self._dropped[reason] <= 0:
                del self._dropped[reason]

    def snapshot(self, *, pending: int = 0, spooled: int = 0, durable: bool = False,
                 paused: bool = False) -> Stats:
        with self._lock:
            ints = {name: self._ints[name] for name in _INT_FIELDS}
            return Stats(
                units_sent=MappingProxyType(dict(self._units)),
                dropped=MappingProxyType(dict(self._dropped)),
                missing=MappingProxyType(dict(self._missing)),
                pending=pending,
                spooled=spooled,
                price_table=self.price_table,
                over_cap=self._gauges.get("over_cap", 0),
                awaiting_key=self._gauges.get("awaiting_key", 0),
                durable=durable,
                paused=paused,
                **ints,
            )

    def after_fork(self) -> None:
        self.__init__()  # type: ignore[misc]
