"""The Redis Streams sink: append usage records to a stream that ``aerostack-meter relay`` delivers.

``send()`` is called by the reporter's sender threads (never on the caller's thread). Concurrent
calls are committed as a group: the first thread in takes every record waiting and appends them
with one pipelined round trip (``XADD`` each, then ``XLEN``); the others wait for its answer. The
stream is capped near ``maxlen`` by trimming only entries every consumer group has acknowledged;
undelivered entries past the cap are kept, counted (``stats().over_cap``) and warned about.

A failed or unanswered append is retried by the reporter like any failed delivery: an entry that
was appended although the answer was lost comes back with the same record id (the batch's
Idempotency-Key), and the relays deliver each record id once.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from .._log import log_limited
from .._stream import StreamConfig, ensure_group, safe_trim, safe_url
from ._base import OK, Batch, SendResult

if TYPE_CHECKING:
    import redis

    from .._stats import Counters

__all__ = ["RedisSink"]

_TRIM_EVERY = 1.0  # seconds between cap checks that found the stream over its cap


class _Slot:
    __slots__ = ("batch", "done", "result")

    def __init__(self, batch: Batch) -> None:
        self.batch = batch
        self.result: SendResult = OK
        self.done = False


def encode(batch: Batch) -> dict[str, str]:
    """The stream entry of one batch (see :mod:`aerostack_meter._stream` for the fields)."""
    return {"r": batch.idempotency_key, "c": batch.consumer_id, "a": batch.api_id,
            "m": batch.metric, "u": str(batch.units), "n": str(batch.n_events),
            "e": "1" if batch.estimated else "0"}


class RedisSink:
    """Appends each batch as one entry of a Redis stream (``redis://host:port/db?stream=...&maxlen=...``).

    Needs the ``redis`` extra (``pip install 'aerostack-meter[redis]'``).
    """

    def __init__(self, url: str, *, client: redis.Redis | None = None) -> None:
        self.config = StreamConfig.from_url(url)
        #: where this sink delivers, without secrets (names the destination of journaled usage)
        self.destination = f"redis:{safe_url(self.config.redis_url)}#{self.config.stream}"
        import redis as _redis  # fail now, in init(), when the extra is missing

        self._errors: tuple[type[BaseException], ...] = (_redis.ConnectionError, _redis.TimeoutError)
        self._auth_errors = (_redis.AuthenticationError, _redis.exceptions.AuthorizationError)
        self._response_error = _redis.ResponseError
        self._client = client
        self._counters: Counters | None = None
        self._after_fork_state()

    def _after_fork_state(self) -> None:
        self._queue_lock = threading.Lock()
        self._commit_lock = threading.Lock()
        self._waiting: list[_Slot] = []
        self._group_ready = False
        self._next_trim = 0.0
        self._over = 0

    def bind_counters(self, counters: Counters) -> None:
        """The meter's counters, for ``over_cap``."""
        self._counters = counters

    def _get_client(self) -> redis.Redis:
        if self._client is None:
            self._client = self.config.connect()
        return self._client

    def send(self, batch: Batch) -> SendResult:
        try:
            for text in (batch.consumer_id, batch.api_id, batch.metric, batch.idempotency_key):
                text.encode()
        except UnicodeEncodeError:  # a lone surrogate in an id: no entry can carry it
            return SendResult("fatal", reason="unencodable",
                              message="consumerId, apiId or metric is not valid Unicode")
        slot = _Slot(batch)
        with self._queue_lock:
            self._waiting.append(slot)
        with self._commit_lock:
            if not slot.done:
                with self._queue_lock:
                    slots, self._waiting = self._waiting, []
                self._commit(slots)
        return slot.result

    def _commit(self, slots: list[_Slot]) -> None:
        result = self._append(slots)
        for s in slots:
            if result is not None:
                s.result = result
            s.done = True

    def _append(self, slots: list[_Slot]) -> SendResult | None:
        """One pipelined round trip for every waiting record; ``None`` when each slot has its own
        result."""
        cfg = self.config
        try:
            client = self._get_client()
            if not self._group_ready:
                ensure_group(client, cfg)
                self._group_ready = True
            pipe = client.pipeline(transaction=False)
            for s in slots:
                pipe.xadd(cfg.stream, encode(s.batch))  # type: ignore[arg-type]
            pipe.xlen(cfg.stream)
            replies = pipe.execute(raise_on_error=False)
        except self._auth_errors:
            log_limited("redis_auth", logging.ERROR,
                        "aerostack_meter: Redis at %s refused the credentials in the URL; usage is "
                        "kept and retried. Fix the password in AEROSTACK_METER_REDIS_URL.",
                        safe_url(cfg.redis_url))
            return SendResult("retry", reason="redis_auth")
        except self._errors as exc:
            log_limited("redis_down", logging.WARNING,
                        "aerostack_meter: Redis at %s is unreachable (%s); usage is kept and retried",
                        safe_url(cfg.redis_url), type(exc).__name__)
            return SendResult("retry", reason="redis_unavailable", message=type(exc).__name__)
        except self._response_error as exc:  # e.g. OOM, READONLY replica, LOADING
            return SendResult("retry", reason="redis_error", message=str(exc)[:200])
        for s, reply in zip(slots, replies, strict=False):
            if isinstance(reply, Exception):
                s.result = SendResult("retry", reason="redis_error", message=str(reply)[:200])
        length = replies[-1]
        if isinstance(length, int):
            self._cap(client, length)
        return None

    def _cap(self, client: redis.Redis, length: int) -> None:
        """Trim delivered entries past the cap (at most once a second); keep ``over_cap`` current."""
        cfg = self.config
        if length <= cfg.maxlen:
            self._over = 0
        elif time.monotonic() < self._next_trim:
            if self._over:  # the last check found undelivered entries past the cap: still growing
                self._over = length - cfg.maxlen
        else:
            self._next_trim = time.monotonic() + _TRIM_EVERY
            try:
                _, self._over = safe_trim(client, cfg)
            except Exception as exc:  # trimming is housekeeping: never fail an append over it
                log_limited("redis_trim", logging.WARNING, "aerostack_meter: trimming the Redis "
                            "stream failed (%s)", type(exc).__name__)
        if self._counters is not None:
            self._counters.set_gauge("over_cap", self._over)

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    def after_fork(self) -> None:
        # The parent's sockets stay the parent's: open new ones on demand.
        self._client = None
        self._after_fork_state()

    def __repr__(self) -> str:
        return f"RedisSink({self.config!r})"


def is_redis_url(value: Any) -> bool:
    return isinstance(value, str) and value.split(":", 1)[0] in ("redis", "rediss", "unix")
