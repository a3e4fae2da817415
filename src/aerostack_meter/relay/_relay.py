"""The relay: read usage records from the Redis stream, deliver them to the billing API, then ack.

One loop per relay process (several relays, on several machines, share one consumer group):

1. acknowledge what was delivered but not acknowledged yet (Redis was away at that moment);
2. take entries: this relay's own unacknowledged ones after a restart, entries other relays left
   idle longer than ``claim_idle`` (``XAUTOCLAIM``: a dead relay's), and new ones (``XREADGROUP``);
3. look each record id up in the shared record state (:mod:`._records`): a record delivered
   before, or a second copy of one, is acknowledged without being sent again;
4. coalesce the rest per (consumer, API, metric), mark them ``S`` with the request's
   Idempotency-Key, and deliver with the billing sink, ``concurrency`` requests at a time;
5. on success mark them delivered and ``XACK`` in one transaction; on a transient failure keep
   them (pending in Redis, owned by this relay) and retry with the reporter's back-off; on a
   refusal (400 and the like) copy them to the dead-letter stream and acknowledge.

Held entries are re-claimed by their holder every ``claim_idle / 3`` so that a live relay in a
long outage keeps them. A relay that dies mid-request leaves ``S`` records: the relay that claims
them resends them under the same Idempotency-Key and counts their units as ambiguous (they may
have been billed already: the one double debit left, as with the reporter's own ambiguous retries).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._config import Settings
from .._errors import ConfigError
from .._events import idempotency_key
from .._log import log_limited, logger
from .._retry import RetryPolicy, decide
from .._stream import StreamConfig, ensure_group, safe_trim, safe_url
from .._usage import _MAX_UNITS
from ..sinks import AerostackSink, Batch, SendResult, Sink
from ._records import TAKE, parse_state

if TYPE_CHECKING:
    import redis

__all__ = ["Relay", "RelayOptions", "retry_delay"]

Key = tuple[str, str, str]
_CHUNK = 500


def default_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class RelayOptions:
    """How one relay reads and claims. Times are in seconds."""

    name: str = ""
    #: entries another relay held unacknowledged this long are claimed (it is presumed dead)
    claim_idle: float = 30.0
    #: entries read per XREADGROUP / XAUTOCLAIM call
    read_count: int = 1000
    #: the longest wait for new entries
    block: float = 1.0
    #: how long the record state (delivered ids) lives: longer than any replay you expect
    delivered_ttl: float = 7 * 86400.0
    #: stop reading new entries while this many are held (an outage keeps the rest in Redis)
    max_held: int = 100_000
    #: seconds between cap checks (trim delivered entries past ``maxlen``) and stats publishing
    trim_every: float = 5.0
    publish_every: float = 1.0

    def __post_init__(self) -> None:
        """Raises :class:`ConfigError` for a value Redis would refuse on every read (the relay
        would run and deliver nothing)."""
        counts = (("read_count", self.read_count, 1), ("max_held", self.max_held, 1))
        times = (("claim_idle", self.claim_idle), ("block", self.block), ("delivered_ttl", self.delivered_ttl),
                 ("trim_every", self.trim_every), ("publish_every", self.publish_every))
        for name, n, least in counts:
            if isinstance(n, bool) or not isinstance(n, int) or n < least:
                raise ConfigError(name, f"must be an int >= {least}, got {n!r}")
        for name, v in times:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < math.inf:
                raise ConfigError(name, f"must be a finite number of seconds >= 0, got {v!r}")


def retry_delay(attempts: int, result: SendResult, settings: Settings) -> float:
    """Seconds before the next attempt after ``result`` (``attempts`` failed so far): the
    reporter's rule (:func:`aerostack_meter._retry.decide`): the server's Retry-After when it gave
    one, else full jitter over ``backoff_base * 2**attempts`` capped by ``max_backoff``."""
    policy = RetryPolicy(settings.backoff_base, settings.max_backoff, settings.max_retry_after,
                         pause_probe=settings.max_backoff)
    return decide(result, attempts, policy).delay


class _Held:
    """Entries of one key, summed, waiting for (or between) delivery attempts."""

    __slots__ = ("ambiguous", "api", "attempts", "consumer", "due", "entries", "estimated",
                 "events", "fields", "metric", "records", "tag", "units")

    def __init__(self, key: Key, tag: str | None) -> None:
        self.consumer, self.api, self.metric = key
        self.tag = tag  # the Idempotency-Key a dead relay used for these (claimed "S" entries)
        self.units = 0
        self.events = 0
        self.estimated = False
        self.entries: list[str] = []
        self.records: list[str] = []
        self.fields: list[dict[str, str]] = []  # each entry's own (a refusal dead-letters them as they were)
        self.attempts = 0
        self.ambiguous = False
        self.due = 0.0

    @property
    def key(self) -> Key:
        return (self.consumer, self.api, self.metric)

    def batch(self) -> Batch:
        return Batch(self.consumer, self.api, self.metric, self.units, self.events,
                     idempotency_key(self.key, self.records), attempts=self.attempts,
                     estimated=self.estimated)


class Relay:
    """Delivers the records of one stream's consumer group to the billing API.

    ``settings`` gives the billing destination and the retry rules (``base_url``, ``api_key``,
    ``concurrency``, ``backoff_base``, ``max_backoff``, timeouts); ``sink`` overrides the billing
    sink (tests, other destinations). ``counters`` are this process's; ``aerostack-meter relay
    --stats`` reads every relay's from Redis.
    """

    def __init__(self, stream: StreamConfig, settings: Settings, options: RelayOptions | None = None,
                 *, sink: Sink | None = None, client: redis.Redis | None = None) -> None:
        import redis as _redis

        self.stream = stream
        self.settings = settings
        opts = options or RelayOptions()
        self.options = opts if opts.name else RelayOptions(**{**opts.__dict__, "name": default_name()})
        self.name = self.options.name
        self.sink: Sink = sink if sink is not None else _billing_sink(settings)
        # Any: redis-py's types do not follow decode_responses=True (every reply here is a str)
        self.client: Any = client if client is not None else stream.connect(decode_responses=True)
        self._redis_errors = (_redis.ConnectionError, _redis.TimeoutError, _redis.BusyLoadingError)
        self._response_error = _redis.ResponseError
        self._take = self.client.register_script(TAKE)
        self.counters: Counter[str] = Counter()
        self._counters_lock = threading.Lock()
        self._held: dict[Key, list[_Held]] = {}
        self._held_ids: set[str] = set()
        self._acks: list[tuple[_Held, str]] = []  # (delivered or refused batch, its final state)
        # the reporter's retry rules; a paused destination (401/403) is probed every max_backoff
        self._policy = RetryPolicy(settings.backoff_base, settings.max_backoff, settings.max_retry_after,
                                   pause_probe=settings.max_backoff)
        self._pool = ThreadPoolExecutor(max(1, settings.concurrency), thread_name_prefix="aerostack-relay")
        self._stop = threading.Event()
        self._own_read = False
        self._ready = False
        now = time.monotonic()
        self._next_claim = now
        self._next_refresh = now + self.options.claim_idle / 3
        self._next_trim = now
        self._next_publish = now
        self._rate = (now, 0)
        self.rate = 0.0  # records delivered per second, over the last publish period
        self.started = time.time()
        self.last_delivery = 0.0  # when the billing API last accepted a batch (Unix seconds)

    # -- running ------------------------------------------------------------------------------
    def run(self) -> None:
        """Loop until :meth:`stop`; survives Redis and billing API outages (waits and retries)."""
        failures = 0
        while not self._stop.is_set():
            try:
                self.run_once()
                failures = 0
            except self._redis_errors as exc:
                failures += 1
                self._count("redis_errors")
                log_limited("relay_redis", logging.WARNING,
                            "aerostack-meter relay: Redis at %s unavailable (%s); retrying",
                            safe_url(self.stream.redis_url), type(exc).__name__, every=10.0)
                self._stop.wait(min(self.settings.max_backoff, 0.05 * 2 ** min(failures, 8)))
            except self._response_error as exc:
                if "NOGROUP" in str(exc):  # Redis lost its data (no AOF?): recreate the group
                    self._ready = False
                    log_limited("relay_nogroup", logging.ERROR, "aerostack-meter relay: the consumer "
                                "group %r was gone (Redis lost its data?); recreated",
                                self.stream.group)
                    continue
                self._count("internal_errors")
                log_limited("relay_error", logging.ERROR, "aerostack-meter relay: Redis error: %s",
                            str(exc)[:200])
                self._stop.wait(1.0)
            except Exception:
                self._count("internal_errors")
                log_limited("relay_error", logging.ERROR, "aerostack-meter relay: error", exc_info=True)
                self._stop.wait(1.0)
        try:
            self._flush_acks()
            self._publish(final=True)
        except Exception:
            logger.debug("relay: final ack failed", exc_info=True)

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.sink.close()
        self.client.close()

    @property
    def held(self) -> int:
        """Entries this relay holds (read, not yet acknowledged)."""
        return len(self._held_ids)

    def run_once(self) -> int:
        """One pass of the loop; returns the number of entries taken."""
        if not self._ready:
            ensure_group(self.client, self.stream)
            self._ready = True
        self._flush_acks()
        now = time.monotonic()
        entries: list[tuple[str, dict[str, str] | None]] = []
        if not self._own_read:
            entries += self._read_own()
            self._own_read = True
        if now >= self._next_claim:
            entries += self._claim()
            self._next_claim = now + max(self.options.claim_idle / 2, 0.05)
        if self.held < self.options.max_held:
            entries += self._read_new(self._block_ms(now, bool(entries)))
        if entries:
            self._take_entries(entries)
        self._send_due()
        self._housekeeping()
        return len(entries)

    def _block_ms(self, now: float, have: bool) -> int | None:
        if have or self._stop.is_set():
            return None
        wait = self.options.block
        due = [h.due for hs in self._held.values() for h in hs]
        if due:
            wait = min(wait, max(min(due) - now, 0.0))
        ms = int(wait * 1000)
        return ms if ms >= 1 else None

    # -- reading ------------------------------------------------------------------------------
    def _read_own(self) -> list[tuple[str, dict[str, str] | None]]:
        """This consumer's own unacknowledged entries (a restart under the same name)."""
        out: list[tuple[str, dict[str, str] | None]] = []
        start = "0"
        while True:
            reply = self.client.xreadgroup(self.stream.group, self.name, {self.stream.stream: start},
                                           count=self.options.read_count)
            got = reply[0][1] if reply else []
            out += [(eid, fields or None) for eid, fields in got if eid not in self._held_ids]
            if len(got) < self.options.read_count:
                return out
            start = got[-1][0]

    def _read_new(self, block_ms: int | None) -> list[tuple[str, dict[str, str] | None]]:
        reply = self.client.xreadgroup(self.stream.group, self.name, {self.stream.stream: ">"},
                                       count=self.options.read_count, block=block_ms)
        return [(eid, fields) for eid, fields in (reply[0][1] if reply else [])]

    def _claim(self) -> list[tuple[str, dict[str, str] | None]]:
        out: list[tuple[str, dict[str, str] | None]] = []
        cursor = "0-0"
        idle_ms = int(self.options.claim_idle * 1000)
        while len(out) + self.held < self.options.max_held:
            reply = self.client.xautoclaim(self.stream.stream, self.stream.group, self.name,
                                           min_idle_time=idle_ms, start_id=cursor,
                                           count=self.options.read_count)
            cursor, claimed = reply[0], reply[1]
            fresh = [(eid, fields or None) for eid, fields in claimed if eid not in self._held_ids]
            if fresh:
                self._count("entries_claimed", len(fresh))
            out += fresh
            if cursor in ("0-0", b"0-0"):
                break
        return out

    # -- taking -------------------------------------------------------------------------------
    def _take_entries(self, entries: list[tuple[str, dict[str, str] | None]]) -> None:
        valid: list[tuple[str, dict[str, str]]] = []
        seen: set[str] = set()
        dead: list[tuple[str, dict[str, str] | None, str]] = []
        ack_only: list[str] = []
        for eid, fields in entries:
            if eid in seen or eid in self._held_ids:
                continue
            seen.add(eid)
            if fields is None:  # deleted from the stream while pending: nothing to deliver
                ack_only.append(eid)
            elif _valid(fields):
                valid.append((eid, fields))
            else:
                dead.append((eid, fields, "invalid_entry"))
        ttl_ms = int(self.options.delivered_ttl * 1000)
        for i in range(0, len(valid), _CHUNK):
            chunk = valid[i:i + _CHUNK]
            answers = self._take(keys=[self.stream.record_key(f["r"]) for _, f in chunk],
                                 args=[ttl_ms, *[eid for eid, _ in chunk]])
            for (eid, fields), answer in zip(chunk, answers, strict=True):
                state, tag = parse_state(answer)
                if state in ("new", "T"):
                    self._hold(eid, fields, None)
                elif state == "S":  # a relay died while sending it: it may be billed already
                    self._hold(eid, fields, tag)
                    self._ambiguous(fields["c"], int(fields["u"]), claimed=True)
                elif state == "dup":
                    self._count("duplicates_skipped")
                    ack_only.append(eid)
                else:  # D, X: delivered (or dead-lettered) before; only the ack was missing
                    self._count("already_delivered")
                    ack_only.append(eid)
        if dead:
            self._dead_letter_raw(dead)
        if ack_only:
            self.client.xack(self.stream.stream, self.stream.group, *ack_only)

    def _hold(self, eid: str, f: dict[str, str], tag: str | None) -> None:
        key = (f["c"], f["a"], f["m"])
        units = int(f["u"])
        group = self._held.setdefault(key, [])
        target = None
        for h in group:
            # merge only into a batch no request of which may have been processed, so a resend
            # keeps the Idempotency-Key of the request it repeats
            if h.tag == tag and not h.ambiguous and h.units + units < _MAX_UNITS:
                target = h
                break
        if target is None:
            target = _Held(key, tag)
            target.due = time.monotonic()
            group.append(target)
        target.units += units
        target.events += int(f.get("n", "1") or 1)
        target.estimated |= f.get("e") == "1"
        target.entries.append(eid)
        target.records.append(f["r"])
        target.fields.append(f)
        self._held_ids.add(eid)

    # -- sending ------------------------------------------------------------------------------
    def _send_due(self) -> None:
        now = time.monotonic()
        due = [h for hs in self._held.values() for h in hs if h.due <= now]
        if not due:
            return
        batches = [h.batch() for h in due]
        pipe = self.client.pipeline(transaction=False)
        for h, b in zip(due, batches, strict=True):
            for eid, rid in zip(h.entries, h.records, strict=True):
                pipe.set(self.stream.record_key(rid), f"S:{eid}|{b.idempotency_key}", xx=True, keepttl=True)
        pipe.execute()
        results = list(self._pool.map(self._send_one, batches))
        for h, b, result in zip(due, batches, results, strict=True):
            self._on_result(h, b, result)
        self._flush_acks()

    def _send_one(self, batch: Batch) -> SendResult:
        try:
            return self.sink.send(batch)
        except Exception as exc:
            log_limited("relay_sink", logging.ERROR, "aerostack-meter relay: sink raised %s",
                        type(exc).__name__)
            return SendResult("retry", reason="sink_error", ambiguous=True)

    def _on_result(self, h: _Held, batch: Batch, result: SendResult) -> None:
        self._count("requests")
        if result.outcome == "retry" and not (result.retry_after is not None and result.reason == "http_429"):
            h.attempts += 1  # a server that throttles and says when is not failing
        decision = decide(result, max(h.attempts, 1), self._policy)
        if decision.action == "done":
            self._unhold(h)
            self._acks.append((h, "D"))
            self._count("records_delivered", len(h.records))
            self._count("events_delivered", h.events)
            self._count("units_delivered", h.units)
            self.last_delivery = time.time()
            return
        if decision.action == "dead":
            log_limited("relay_fatal_" + result.reason, logging.ERROR,
                        "aerostack-meter relay: the billing API refused %d records (%s): %s; moved "
                        "to the dead-letter stream %r", len(h.records), result.reason,
                        result.message or "no message", self.stream.dead_stream)
            self._unhold(h)
            self._dead_letter(h, result.reason)
            return
        self._count("retries")
        if decision.action == "pause":  # a wrong key: keep everything, say what to fix, keep probing
            log_limited("relay_key", logging.ERROR,
                        "aerostack-meter relay: the billing API refused the key (%s); nothing is "
                        "acknowledged until it is accepted. Check AEROSTACK_API_KEY.", result.reason)
        else:
            log_limited("relay_retry_" + result.reason, logging.WARNING,
                        "aerostack-meter relay: delivery failed (%s); retrying with back-off",
                        result.reason, every=10.0)
        if result.ambiguous and not h.ambiguous:
            h.ambiguous = True
            self._ambiguous(h.consumer, h.units, claimed=False)
        h.due = time.monotonic() + decision.delay

    def _unhold(self, h: _Held) -> None:
        group = self._held.get(h.key, [])
        if h in group:
            group.remove(h)
        if not group:
            self._held.pop(h.key, None)
        self._held_ids.difference_update(h.entries)

    def _ambiguous(self, consumer: str, units: int, *, claimed: bool) -> None:
        """Units that may be billed twice (counted per consumer in ``{stream}:ambiguous``)."""
        self._count("ambiguous_claims" if claimed else "ambiguous_retries")
        self._count("ambiguous_units", units)
        with contextlib.suppress(*self._redis_errors):  # counted locally; the shared tally is best effort
            self.client.hincrby(self.stream.stream + ":ambiguous", consumer, units)

    # -- acknowledging ----------------------------------------------------------------------
    def _flush_acks(self) -> None:
        if not self._acks:
            return
        acks = self._acks
        ttl_ms = int(self.options.delivered_ttl * 1000)
        ids: list[str] = []
        pipe = self.client.pipeline(transaction=True)
        for h, state in acks:
            for eid, rid in zip(h.entries, h.records, strict=True):
                pipe.set(self.stream.record_key(rid), f"{state}:{eid}", px=ttl_ms)
                ids.append(eid)
        for i in range(0, len(ids), _CHUNK):
            pipe.xack(self.stream.stream, self.stream.group, *ids[i:i + _CHUNK])
        replies = pipe.execute()
        acked = sum(int(r) for r in replies[len(ids):])
        self._acks = []
        if acked < len(ids):  # claimed again meanwhile (this one stalled past claim_idle)
            self._count("lost_claims", len(ids) - acked)
            log_limited("relay_lost", logging.WARNING,
                        "aerostack-meter relay: %d delivered entries had been claimed again and "
                        "acknowledged meanwhile (by another relay, or by this one after a stall "
                        "past claim_idle, e.g. Redis paused)", len(ids) - acked)

    def _dead_letter(self, h: _Held, reason: str) -> None:
        """Each refused entry, copied whole (its units, events, record id...) with the stream entry
        it was and the reason: the main stream's copy is acknowledged and trimmed in time, so the
        dead-letter stream is where the refused usage stays."""
        pipe = self.client.pipeline(transaction=False)
        for eid, fields in zip(h.entries, h.fields, strict=True):
            pipe.xadd(self.stream.dead_stream, {**fields, "entry": eid, "reason": reason})
        pipe.execute()
        self._count("records_dead_lettered", len(h.records))
        self._acks.append((h, "X"))

    def _dead_letter_raw(self, items: Iterable[tuple[str, dict[str, str] | None, str]]) -> None:
        pipe = self.client.pipeline(transaction=False)
        ids = []
        for eid, fields, reason in items:
            pipe.xadd(self.stream.dead_stream, {**(fields or {}), "entry": eid, "reason": reason})
            ids.append(eid)
        pipe.xack(self.stream.stream, self.stream.group, *ids)
        pipe.execute()
        self._count("records_dead_lettered", len(ids))
        log_limited("relay_invalid", logging.ERROR, "aerostack-meter relay: %d malformed stream "
                    "entries moved to %r", len(ids), self.stream.dead_stream)

    # -- housekeeping -------------------------------------------------------------------------
    def _housekeeping(self) -> None:
        now = time.monotonic()
        if now >= self._next_refresh:
            self._refresh_claims()
            self._next_refresh = now + max(self.options.claim_idle / 3, 0.05)
        if now >= self._next_trim:
            self._next_trim = now + self.options.trim_every
            trimmed, over = safe_trim(self.client, self.stream)
            self._count("entries_trimmed", trimmed)
            self.counters["over_cap"] = over
        if now >= self._next_publish:
            self._next_publish = now + self.options.publish_every
            self._publish()

    def _refresh_claims(self) -> None:
        """Reset the idle time of every entry this relay holds, so no other relay claims them."""
        ids = list(self._held_ids) + [eid for h, _ in self._acks for eid in h.entries]
        if not ids:
            return
        pipe = self.client.pipeline(transaction=False)
        for i in range(0, len(ids), _CHUNK):
            pipe.xclaim(self.stream.stream, self.stream.group, self.name, 0, ids[i:i + _CHUNK],
                        justid=True)
        pipe.execute()

    def _publish(self, final: bool = False) -> None:
        now = time.monotonic()
        t0, n0 = self._rate
        n = self.counters["records_delivered"]
        if now > t0:
            self.rate = (n - n0) / (now - t0)
        self._rate = (now, n)
        fields: dict[str, Any] = {k: v for k, v in self.counters.items()}
        fields.update(held=self.held, records_per_s=round(self.rate, 1), updated=time.time(),
                      started=self.started, stopped=1 if final else 0,
                      last_delivery=self.last_delivery)
        key = self.stream.relay_key(self.name)
        pipe = self.client.pipeline(transaction=False)
        pipe.hset(key, mapping=fields)
        pipe.expire(key, 86400)
        pipe.execute()

    def _count(self, name: str, n: int = 1) -> None:
        with self._counters_lock:
            self.counters[name] += n


def _valid(f: dict[str, str]) -> bool:
    try:
        units = int(f["u"])
        return (0 <= units < _MAX_UNITS and bool(f["r"]) and bool(f["c"]) and bool(f["a"])
                and bool(f["m"]))
    except (KeyError, ValueError, TypeError):
        return False


def _billing_sink(s: Settings) -> Sink:
    if s.api_key is None:
        raise ValueError("the relay needs an API key (AEROSTACK_API_KEY)")
    return AerostackSink(s.api_key, base_url=s.base_url, connect_timeout=s.connect_timeout,
                         read_timeout=s.read_timeout, concurrency=s.concurrency, verify=s.verify,
                         transport=s.transport, max_retry_after=s.max_retry_after)
