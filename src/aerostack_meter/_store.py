"""Where recorded usage waits for delivery: in memory, or in this process's journal on disk.

Both stores take usage on the caller's thread (``put``: O(1), no lock) and hand it to the one
delivery loop (``_reporter``) as records; the durable store also remembers what the loop formed,
attempted and settled, so that another process can finish the job if this one dies.
"""

from __future__ import annotations

import itertools
import logging
import os
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from ._journal import Journal, Recovered, ShortWrite, _reencode, adopt_dead, whole_records
from ._journal_format import (
    _EV,
    _HDR,
    _USAGE,
    B_ESTIMATED,
    B_INFLIGHT,
    B_PREFORMED,
    EV_ESTIMATED,
    EV_PRICED,
    MAGIC,
    U_ESTIMATED,
    BatchRec,
    Event,
    Priced,
    RawUsage,
    encode_batch,
    encode_event,
    encode_mark,
    encode_priced,
    key_blob,
    parse,
    strings_blob,
)
from ._log import log_once
from ._paths import REFUSED, refused_key_dirs, set_refused
from ._rescue import rescue_quarantined
from .sinks import Batch

__all__ = ["EventTuple", "JournalStore", "MemoryStore", "Store"]

# (consumer_id, api_id, metric, units, flags): one event, as the caller hands it over
EventTuple = tuple[str, str, str, int, int]
Record = Event | BatchRec

_crc32 = __import__("zlib").crc32
_pack_hdr = _HDR.pack
_pack_ev = _EV.pack
_pack_usage = _USAGE.pack
# (consumer, api, metric, pack, blob): see JournalStore._packer
_Packer = tuple[str, str, str, Callable[..., bytes], bytes]
#: an open sum the reporter hands to ``compact``: (consumer, api, metric), units, of which
#: estimated, whether any is estimated, priced
Sum = tuple[tuple[str, str, str], int, int, bool, bool]
_COMPACT_MIN = 1 << 16  # the least growth between compactions, whatever spool_max_bytes says
_PRICING_PASSES = 4  # reads per delivery step that price U records and read back their X records


class MemoryStore:
    """Usage in a deque. Lost if the process dies; bounded by ``max_queue_size`` (beyond it, units
    are summed per key under a lock: totals are kept, only per-event detail is lost)."""

    durable = False
    stalled = False  # (see JournalStore.stalled)

    def __init__(self, max_queue_size: int, on_overflow: Callable[[int], None] | None = None) -> None:
        self._max = max_queue_size
        self._on_overflow = on_overflow
        self._reset()

    def _reset(self) -> None:
        self.token = os.urandom(10).hex()  # 20 random hex digits (uuid would import platform)
        self._q: deque[tuple[str, str, str, int, int, float]] = deque()
        self._appended = itertools.count()
        self._n_appended = 0
        self._drained = 0
        self._overflow: dict[tuple[str, str, str], list[int]] = {}
        self._lock = threading.Lock()

    # caller side
    def put(self, c: str, a: str, m: str, units: int, flags: int, ts: float) -> None:
        q = self._q
        if len(q) >= self._max:
            self._overflowed([(c, a, m, units, flags)], ts)
            return
        q.append((c, a, m, units, flags, ts))
        next(self._appended)

    def put_many(self, events: Sequence[EventTuple], ts: float) -> None:
        if len(self._q) + len(events) > self._max:
            self._overflowed(events, ts)
            return
        for c, a, m, units, flags in events:
            self._q.append((c, a, m, units, flags, ts))
            next(self._appended)

    def _overflowed(self, events: Sequence[EventTuple], ts: float) -> None:
        with self._lock:
            for c, a, m, units, flags in events:
                acc = self._overflow.setdefault((c, a, m), [0, 0, 0])
                acc[0] += units
                acc[1] += 1
                acc[2] |= flags
        if self._on_overflow is not None:
            self._on_overflow(len(events))

    # delivery-loop side
    def mark(self) -> Any:
        """A position covering everything put so far (for ``reached``)."""
        return _count_value(self._appended)

    def reached(self, mark: Any) -> bool:
        """Everything put before ``mark()`` returned ``mark`` has been read."""
        return bool(self._drained >= mark)

    def read(self) -> list[Record]:
        out: list[Record] = []
        q = self._q
        while q:
            c, a, m, units, flags, ts = q.popleft()
            out.append(Event(-1, c, a, m, units, flags, ts))
        self._drained += len(out)
        if self._overflow:
            with self._lock:
                overflow, self._overflow = self._overflow, {}
            for (c, a, m), (units, n, flags) in overflow.items():
                out.append(BatchRec(-1, "O", c, a, m, units, n, flags, ""))
        return out

    def unread(self) -> int:
        with self._lock:
            over = sum(v[1] for v in self._overflow.values())
        return len(self._q) + over

    def formed(self, batch: Batch, lo: int, hi: int, preformed: bool) -> bool:
        return True

    def attempt(self, batch: Batch) -> bool:
        return True

    def failed(self, batch: Batch) -> None:
        pass

    def settled(self, batch: Batch, dead: bool) -> None:
        pass

    def key_answer(self, accepted: bool) -> None:
        pass

    def crowded(self) -> bool:
        return False

    def compact(self, unsettled: Sequence[Batch], sums: Sequence[Sum]) -> list[int] | None:
        return None

    def maintain(self, idle: bool) -> None:
        pass

    def close(self, settled: bool) -> None:
        pass

    def reopen(self) -> None:
        pass

    def after_fork(self) -> None:
        self._reset()


def _count_value(counter: Any) -> int:
    """The next value an ``itertools.count`` would return, without advancing it."""
    return int(repr(counter)[6:-1])


class JournalStore:
    """Usage in this process's append-only journal (see ``_journal``): on disk before ``put`` returns.

    Each record is one ``Journal.append`` (a copy into the journal's file mapping, no lock, no
    system call; ``os.write`` where it cannot be mapped). A write that fails (only without a
    mapping: a full disk, an I/O error) falls back to memory for that record: counted
    in ``stats().journal_errors`` and warned about once. ``legacy``: the directory where versions
    before key fingerprints journaled this destination (``_paths.legacy_dir``); what dead
    processes left there is adopted too, as those versions did.
    """

    durable = True

    @property
    def token(self) -> str:
        """The journal's identity (in request keys, ``am-<token>-<seq>``): a new one when the
        journal starts anew (``reopen``, a fork, an append after a deleting close)."""
        return self.journal.token

    @property
    def stalled(self) -> bool:
        """Delivery state cannot be written (a full disk): a flush waiting on it cannot move
        until a later step retries, so the reporter does not spin on it."""
        return bool(self._unwritten)

    def __init__(self, directory: str, max_bytes: int, counters: Any, legacy: str | None = None) -> None:
        self.dir = directory
        self.legacy = legacy
        self._refused = legacy is not None and os.path.exists(os.path.join(directory, REFUSED))
        self._max_bytes = max_bytes
        self._counters = counters
        self._blobs: dict[tuple[str, str, str], bytes] = {}
        self._packers: dict[tuple[str, str, str], _Packer] = {}
        self._last: _Packer = ("", "", "", _pack_ev, b"")  # matches no key (compared by identity)
        self._fallback = MemoryStore(1 << 62)
        self._last_adopt = 0.0
        self.adopt_failed = False
        self.journal = Journal(directory, on_unmapped=self._unmapped)
        self._write = self.journal.append  # a bound method: the journal object never changes
        self._full = False
        self._tails: dict[tuple[str, str | None, str | None, str, str, bytes], bytes] = {}
        self._held: list[RawUsage] = []  # U records this process cannot price (no price table)
        self._unwritten: list[tuple[int, bytes]] = []  # X records whose write failed: (U offset, X)
        self._due: list[bytes] = []  # F and D marks whose write failed, in order (see _mark)
        self._marks_lock = threading.Lock()
        self._owed: list[tuple[int, int]] = []  # X records written, not read back: (U offset, end)
        self._compacted_at = 0  # where what compact() carried into the current segment ends
        self._adopting = threading.Lock()  # held while dead journals are copied in (see _adopt)
        self._rescue_seen: set[tuple[str, int]] = set()  # quarantined files with nothing to rescue

    # -- caller side --------------------------------------------------------------------------
    def _blob(self, key: tuple[str, str, str]) -> bytes:
        blob = key_blob(*key)  # UnicodeEncodeError for a lone surrogate: the caller counts it
        if len(self._blobs) > 4096:
            self._blobs.clear()
        self._blobs[key] = blob
        return blob

    def _packer(self, c: str, a: str, m: str) -> _Packer:
        """(c, a, m, pack, blob): ``pack(b"E", ts, units, flags, blob)`` is the payload of an ``E``
        record of this key (``b"E" + _EV.pack(ts, units, flags) + blob``, in one call)."""
        key = (c, a, m)
        packer = self._packers.get(key)
        if packer is None:
            blob = self._blobs.get(key)
            if blob is None:
                blob = self._blob(key)  # UnicodeEncodeError for a lone surrogate
            packer = (c, a, m, struct.Struct(f"<c{_EV.format[1:]}{len(blob)}s").pack, blob)
            if len(self._packers) > 4096:
                self._packers.clear()
            self._packers[key] = packer
        self._last = packer
        return packer

    def put(self, c: str, a: str, m: str, units: int, flags: int, ts: float) -> None:
        # the last key's packer, by identity (a call's key strings come from its attribution,
        # resolved once per scope): three comparisons instead of a tuple and a dict lookup
        last = self._last
        if last[0] is not c or last[1] is not a or last[2] is not m:
            last = self._packer(c, a, m)
        payload = last[3](b"E", ts, units, flags, last[4])
        try:
            self._write(_pack_hdr(MAGIC, len(payload), _crc32(payload)) + payload)
        except OSError as exc:
            self._write_failed(exc, [(c, a, m, units, flags)], ts)

    def put_many(self, events: Sequence[EventTuple], ts: float) -> None:
        parts = []
        for c, a, m, units, flags in events:
            blob = self._blobs.get((c, a, m))
            if blob is None:
                blob = self._blob((c, a, m))
            payload = b"E" + _pack_ev(ts, units, flags) + blob
            parts.append(_pack_hdr(MAGIC, len(payload), _crc32(payload)) + payload)
        try:
            self._write(b"".join(parts))
        except OSError as exc:  # (a short write: those written whole are journaled)
            done = whole_records(map(len, parts), exc.written) if isinstance(exc, ShortWrite) else 0
            self._write_failed(exc, events[done:], ts)

    def put_usage(self, usage: Any, c: str, a: str, params: bytes, ts: float) -> bool:
        """Journal one call's raw usage (a ``U`` record, one write), to be priced on the delivery
        side by the cost policy ``params`` names (see ``_deferred``). False when it could not be
        written (the caller then prices it in memory)."""
        u = usage
        tkey = (u.provider, u.model, u.service_tier, c, a, params)
        try:
            tail = self._tails.get(tkey)
            if tail is None:
                tail = strings_blob(u.provider, u.model or "", u.service_tier or "", c, a) + params
                if len(self._tails) > 4096:
                    self._tails.clear()
                self._tails[tkey] = tail
            tools = u.server_tool_use
            payload = b"U" + _pack_usage(
                ts, u.input_tokens, u.output_tokens, u.total_tokens, u.cached_input_tokens,
                u.cache_write_tokens, u.cache_write_1h_tokens, u.reasoning_tokens,
                u.audio_input_tokens, u.audio_output_tokens,
                tools.get("web_search_requests", 0) if tools else 0, 0,
                U_ESTIMATED if u.estimated else 0) + tail
        except Exception:  # an odd count or string: priced the old way, on the reporter thread
            return False
        try:
            self._write(_pack_hdr(MAGIC, len(payload), _crc32(payload)) + payload)
        except OSError as exc:
            self._counters.add("journal_errors")
            log_once("journal_write", logging.WARNING,
                     "aerostack_meter: cannot write the usage journal in %s (%s); usage is kept in "
                     "memory until it is delivered (lost if the process dies first)",
                     self.dir, exc.strerror or type(exc).__name__)
            return False
        return True

    def _unmapped(self, exc: OSError) -> None:
        self._counters.add("journal_unmapped")
        log_once("journal_unmapped", logging.WARNING,
                 "aerostack_meter: cannot memory-map the usage journal in %s (%s); it is written "
                 "with one write() per call instead (as durable, slower)",
                 self.dir, exc.strerror or str(exc) or type(exc).__name__)

    def _write_failed(self, exc: OSError, events: Sequence[EventTuple], ts: float) -> None:
        self._fallback.put_many(events, ts)
        self._counters.add("journal_errors")
        log_once("journal_write", logging.WARNING,
                 "aerostack_meter: cannot write the usage journal in %s (%s); usage is kept in "
                 "memory until it is delivered (lost if the process dies first)",
                 self.dir, exc.strerror or type(exc).__name__)

    # -- delivery-loop side ----------------------------------------------------------------------
    def mark(self) -> Any:
        return (*self.journal.position(), self._fallback.mark())

    def reached(self, mark: Any) -> bool:
        seg, size, fb = mark
        j = self.journal
        if j.seg == seg and (any(u < size and j.read_pos < end for u, end in self._owed)
                             or any(u < size for u, _x in self._unwritten)):
            return False  # a call before the mark is priced but its events are not read yet
        # (and the records rotate() carried over into the current segment are read: a mark of the
        # segment before, or one taken in the instant of the rotation, covers them)
        return j.read_pos >= max(j.carried, size if j.seg == seg else 0) and self._fallback.reached(fb)

    def read(self) -> list[Record]:
        """New events and requests. ``U`` records are priced here (see ``_deferred``): their ``X``
        records are written, then read back like any record, with their journal offsets."""
        out: list[Record] = []
        self._write_marks([])
        if self._due:
            with self._marks_lock:
                self._write_due()
        for _ in range(_PRICING_PASSES):
            records, bad = self.journal.read_new()
            if bad:
                self._counters.add("journal_bad_bytes", bad)
            pos = self.journal.read_pos
            self._owed = [o for o in self._owed if o[1] > pos]
            marks = []
            for r in records:
                if isinstance(r, Event):
                    out.append(r)
                elif isinstance(r, Priced):
                    out.extend(r.events)
                elif isinstance(r, RawUsage):
                    mark = self._price(r)
                    if mark is not None:
                        marks.append((r.offset, mark))
                elif isinstance(r, BatchRec) and r.kind == "P":
                    out.append(r)
            if not marks or not self._write_marks(marks):
                break
        out.extend(self._fallback.read())
        return out

    def _price(self, rec: RawUsage) -> bytes | None:
        from ._deferred import PricingUnavailable, price

        try:
            events = price(rec, self._counters)
        except PricingUnavailable:
            self._hold(rec)
            return None
        except Exception:  # never lose it to a bug of ours: kept for a later process
            self._counters.add("internal_errors")
            log_once("price_error", logging.ERROR, "aerostack_meter: pricing a call failed",
                     exc_info=True)
            self._hold(rec)
            return None
        return encode_priced(rec.offset, events, rec.ts)

    def _hold(self, rec: RawUsage) -> None:
        self._held.append(rec)
        self._counters.add("awaiting_price")
        log_once("awaiting_price", logging.WARNING,
                 "aerostack_meter: calls metered with metrics=\"cost\" by another process cannot "
                 "be priced here (the price table, aerostack-meter[cost], is not installed); they "
                 "are kept in %s for a process that can (stats().awaiting_price)", self.dir)

    def _write_marks(self, marks: list[tuple[int, bytes]]) -> bool:
        """Append ``X`` records (with any whose write failed before) in one write."""
        todo = self._unwritten + marks
        if not todo:
            return False
        try:
            self.journal.append(b"".join(x for _u, x in todo))
        except OSError as exc:
            if isinstance(exc, ShortWrite):  # those written whole are on disk: owed, never again
                done = whole_records((len(x) for _u, x in todo), exc.written)
                self._owed.extend((u, self.journal.size()) for u, _x in todo[:done])
                todo = todo[done:]
            self._unwritten = todo  # retried at the next read; the U stays unpriced on disk
            self._counters.add("journal_errors")
            log_once("journal_state", logging.WARNING,
                     "aerostack_meter: cannot write delivery state to the journal in %s (%s)",
                     self.dir, exc.strerror or type(exc).__name__)
            return False
        self._unwritten = []
        end = self.journal.size()
        self._owed.extend((u, end) for u, _x in todo)
        return True

    def unread(self) -> int:
        buf, pos = self.journal.unread()
        n = 0
        if buf:
            for r in parse(buf, pos).records:
                if isinstance(r, (Event, RawUsage)) or (isinstance(r, BatchRec) and r.kind == "P"):
                    n += 1
                elif isinstance(r, Priced):
                    n += len(r.events)
        return n + len(self._held) + len(self._unwritten) + self._fallback.unread()

    def _append(self, data: bytes) -> bool:
        try:
            self.journal.append(data)
        except OSError as exc:
            self._counters.add("journal_errors")
            log_once("journal_state", logging.WARNING,
                     "aerostack_meter: cannot write delivery state to the journal in %s (%s); "
                     "requests for usage already on disk wait until it can be written",
                     self.dir, exc.strerror or type(exc).__name__)
            return False
        return True

    def formed(self, batch: Batch, lo: int, hi: int, preformed: bool) -> bool:
        """Journal the request formed from the events at offsets [lo, hi) (or from a ``P``
        record). False when that could not be written while it covers usage on disk: it must not
        be sent before it is (a death afterwards would replay that usage under another key,
        counted nowhere); the reporter tries again each step. A request for events kept in
        memory (``lo == hi``: a write of theirs failed) needs no record."""
        flags = (B_ESTIMATED if batch.estimated else 0) | (B_PREFORMED if preformed else 0)
        try:
            blob = key_blob(batch.consumer_id, batch.api_id, batch.metric)
        except UnicodeEncodeError:
            return True  # (such a key's events were never journaled)
        return self._append(encode_batch("B", blob, batch.units, batch.n_events, flags,
                                         batch.idempotency_key, lo, hi)) or (hi <= lo and not preformed)

    def attempt(self, batch: Batch) -> bool:
        """Journal that a retry is being sent (a death during it replays the request as possibly
        delivered, counted). False when that could not be written (nor the marks before it):
        the retry waits."""
        with self._marks_lock:
            if self._write_due() and self._append(encode_mark("T", batch.idempotency_key)):
                batch.journal_mark = "T"
                return True
            return False

    def failed(self, batch: Batch) -> None:
        self._mark(encode_mark("F", batch.idempotency_key), batch, "F")

    def settled(self, batch: Batch, dead: bool) -> None:
        self._mark(encode_mark("D", batch.idempotency_key, 1 if dead else 0), batch, "D")

    def _mark(self, data: bytes, batch: Batch, kind: str) -> None:
        """A request's outcome (``F``, ``D``), journaled in order: one a full disk refused waits,
        with those after it, and is written again at each read (a death before that replays the
        request as possibly delivered, counted in ``ambiguous_retries``)."""
        with self._marks_lock:
            self._due.append(data)
            batch.journal_mark = kind  # (what the journal says of it once the marks due are written)
            self._write_due()

    def _write_due(self) -> bool:
        """(Under ``_marks_lock``) The marks waiting for the disk, in order; True when none is left."""
        while self._due:
            if not self._append(self._due[0]):
                return False
            self._due.pop(0)
        return True

    def key_answer(self, accepted: bool) -> None:
        """The billing API accepted (True) or refused (False: 401/403) our key: marks this key's
        directory so that, while the key stays refused, what its dead processes left is adopted
        by a process whose key works (``_paths.REFUSED``). Cheap when nothing changes."""
        if self.legacy is None or accepted is not self._refused:
            return  # no key, or no change (accepted while unmarked; refused while marked)
        set_refused(self.dir, not accepted)
        self._refused = not accepted

    def crowded(self) -> bool:
        """The current segment has grown by ``spool_max_bytes`` since it began (or since what
        its last compaction carried): time to :meth:`compact` it, settled or not."""
        return self.journal.read_pos - self._compacted_at >= max(self._max_bytes, _COMPACT_MIN)

    def compact(self, unsettled: Sequence[Batch], sums: Sequence[Sum]) -> list[int] | None:
        """Start a new segment although requests are unsettled and sums are open. Carried into
        it, ahead of everything else and already read: each of ``unsettled`` (every request of
        ours journaled and not settled) as a ``P`` record, with the state its marks gave it, and
        each of ``sums`` (the reporter's open sums of events read from the journal: key, units,
        of which estimated, priced) as one or two ``E`` records; then what was not read yet, and
        the old segment goes. A death afterwards replays them from the new segment as it would
        have from the old one. Returns where each sum's records begin (its new ``lo``); ``None``
        when nothing changed: the journal's state is not all written (a full disk; calls'
        usage awaiting a price), or the new segment could not be made (tried again later)."""
        if not self._adopting.acquire(blocking=False):
            return None  # (tried again at the next step)
        try:
            return self._compact(unsettled, sums)
        finally:
            self._adopting.release()

    def _compact(self, unsettled: Sequence[Batch], sums: Sequence[Sum]) -> list[int] | None:
        with self._marks_lock:
            if self._due or self._unwritten:
                return None
            # U records no price table here can price: carried as they are (for a process that can)
            parts = [_reencode(r, adopted=False) for r in self._held]
            for b in unsettled:
                if b.journal_mark == "D":  # settled meanwhile (its sender has not told the reporter yet)
                    continue
                flags = B_ESTIMATED if b.estimated else 0
                if b.journal_mark != "F":  # (as recover() reads a B record without an F after it)
                    flags |= B_INFLIGHT
                try:
                    blob = key_blob(b.consumer_id, b.api_id, b.metric)
                except UnicodeEncodeError:  # (never journaled)
                    continue
                parts.append(encode_batch("P", blob, b.units, b.n_events, flags, b.idempotency_key))
            offsets = []
            pos = sum(map(len, parts))
            ts = time.time()
            for (c, a, m), units, estimated_units, estimated, priced in sums:
                blob = self._blobs.get((c, a, m)) or self._blob((c, a, m))
                extra = EV_PRICED if priced else 0
                offsets.append(pos)
                exact = units - estimated_units
                for n, flags in ((exact, extra), (estimated_units, extra | EV_ESTIMATED)):
                    if (n or not estimated) if flags == extra else estimated:
                        parts.append(encode_event(blob, n, flags, ts))
                        pos += len(parts[-1])
            carry = b"".join(parts)
            try:
                at = self.journal.rotate(carry)
            except OSError as exc:  # (nothing changed: see Journal.rotate) tried again next step
                self._counters.add("journal_errors")
                log_once("journal_compact", logging.WARNING,
                         "aerostack_meter: cannot compact the usage journal in %s (%s); it keeps "
                         "growing until it can", self.dir, exc.strerror or type(exc).__name__)
                return None
            self._owed = []  # (X records not read back yet: copied as E records, see _copy)
            self._compacted_at = self.journal.read_pos
        self._counters.add("journal_compactions")
        return [at + o for o in offsets]

    def maintain(self, idle: bool) -> None:
        """Rotation when everything is settled, and adoption of dead processes' journals."""
        if (idle and not self._unwritten and self.journal.read_pos == self.journal.size()
                and self.journal.read_pos - self._compacted_at > 1 << 20):
            self.compact((), ())
        now = time.monotonic()
        if now - self._last_adopt >= 2.0:
            self._last_adopt = now
            self.adopt()

    def adopt(self) -> int:
        """Take over what dead processes left in this directory, and in the legacy one (appended to
        our journal)."""
        sources: list[tuple[str, str | None]] = [(self.dir, None)]
        if self.legacy is not None:
            if os.path.isdir(self.legacy):
                sources.append((self.legacy, self.dir))
            if not self._refused:  # a key the API refused bills no account: its leftovers are ours
                sources += [(d, self.dir) for d in refused_key_dirs(self.dir)]
        return self._adopt(sources)

    def adopt_other(self, directory: str) -> int:
        """Take over what dead processes left in another key's directory of this destination (an
        operator's explicit choice: ``aerostack-meter drain --adopt-key``); it moves into ours."""
        return self._adopt([(directory, self.dir)])

    def _adopt(self, sources: list[tuple[str, str | None]]) -> int:
        # (no rotation meanwhile: the M marks that say a dead file is copied in must stay in
        # the journal until the file is deleted; see _rotating)
        with self._adopting:
            return self._adopt_locked(sources)

    def _adopt_locked(self, sources: list[tuple[str, str | None]]) -> int:
        self.adopt_failed = False  # (True: some leftovers could not be copied in, see below)
        found = Recovered()
        rescued = 0
        for directory, into in sources:
            try:
                found.add(adopt_dead(directory, self.token, self.journal, into=into))
            except OSError as exc:  # our journal cannot take it (a full disk): retried later
                self.adopt_failed = True
                self._counters.add("journal_errors")
                log_once("adopt_write", logging.WARNING,
                         "aerostack_meter: cannot copy leftover usage into the journal in %s (%s); "
                         "retried later", self.dir, exc.strerror or type(exc).__name__)
                continue
            except Exception:  # bad state never stops the app: counted, logged, retried later
                self._counters.add("internal_errors")
                log_once(f"adopt_error:{directory}", logging.ERROR,
                         "aerostack_meter: could not adopt leftover usage in %s", directory, exc_info=True)
                continue
            try:  # what older versions could not read (see _rescue)
                rescued += rescue_quarantined(directory, self.token, self.journal.append,
                                              self._rescue_seen, into=into)
            except Exception:
                self._counters.add("internal_errors")
                log_once(f"rescue_error:{directory}", logging.ERROR, "aerostack_meter: could not "
                         "rescue usage from quarantined files in %s", directory, exc_info=True)
        if found.bad_bytes or found.quarantined:
            self._counters.add("state_files_quarantined", max(1, len(found.quarantined)))
        n = found.n_events + rescued
        if n:
            self._counters.add("events_adopted", n)
            log_once("adopted", logging.INFO,
                     "aerostack_meter: delivering usage left by an earlier process in %s", self.dir)
        return n

    def close(self, settled: bool) -> None:
        self.journal.close(delete=settled and self._fallback.unread() == 0 and not self._held
                           and not self._unwritten and not self._due
                           and self.journal.size() == self.journal.read_pos)

    def reopen(self) -> None:
        if self.journal.closed:
            self.journal.reopen()
            # what was held or not marked is in the closed journal, adopted from there
            self._held, self._unwritten, self._owed, self._due = [], [], [], []
            self._compacted_at = 0

    def after_fork(self) -> None:
        self.journal.after_fork()
        self._held, self._unwritten, self._owed, self._due = [], [], [], []  # the parent's
        self._compacted_at = 0
        self._marks_lock = threading.Lock()
        self._adopting = threading.Lock()
        self._fallback.after_fork()


Store = MemoryStore | JournalStore
