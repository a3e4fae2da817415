"""The usage event: what one billable quantity is, and what of it goes on the wire."""

from __future__ import annotations

import hashlib
import itertools
import os
import uuid
from typing import Any, NamedTuple

__all__ = ["UsageEvent", "event_identity", "idempotency_key"]

_prefix = uuid.uuid4().hex[:12]
_counter = itertools.count()


def _new_prefix() -> None:
    global _prefix, _counter
    _prefix = uuid.uuid4().hex[:12]
    _counter = itertools.count()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_prefix)


class UsageEvent(NamedTuple):
    """One quantity to bill: ``units`` of ``metric`` to ``consumer_id`` under ``api_id``.

    Immutable. Only ``consumer_id``, ``api_id``, ``metric`` and ``units`` are sent to the billing
    API; the other fields stay local (stats, ledger, spool, ``before_send`` hooks). No prompt or
    completion text is ever part of an event. (A named tuple: creating one is the cheapest
    immutable record Python has, and events are created on the caller's hot path.)
    """

    consumer_id: str
    api_id: str
    metric: str
    units: int
    provider: str | None = None
    model: str | None = None
    response_id: str | None = None
    estimated: bool = False
    timestamp: float = 0.0
    event_id: str = ""
    #: the price table that priced this event (``metrics="cost"``), e.g. ``"genai-prices 0.2.3"``
    price_table: str | None = None

    def replace(self, **changes: Any) -> UsageEvent:
        """A copy with some fields changed (for ``before_send`` hooks)."""
        return self._replace(**changes)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.consumer_id, self.api_id, self.metric)


def event_identity(event: UsageEvent) -> str:
    """The event's identity for idempotency keys: deterministic where the provider gave an id."""
    if event.event_id:
        return event.event_id
    if event.response_id:
        return f"{event.provider}:{event.response_id}:{event.metric}"
    return f"{_prefix}-{next(_counter)}"


def idempotency_key(key: tuple[str, str, str], event_ids: list[str]) -> str:
    """A stable key for one request: the same events under the same key give the same value."""
    h = hashlib.sha256()
    for part in key:
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    for eid in sorted(event_ids):
        h.update(eid.encode("utf-8", "surrogatepass"))
        h.update(b"\x01")
    return "am-" + h.hexdigest()[:40]
