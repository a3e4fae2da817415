"""The usage event, and how one call's usage becomes events: a pure function of its inputs."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from ._usage import Usage, apply_policy, to_count

if TYPE_CHECKING:
    from ._context import Attribution

__all__ = ["EV_CALL", "EV_ESTIMATED", "EV_PRICED", "Built", "EventError", "UsageEvent", "events_of",
           "idempotency_key", "units_ok", "valid_event"]

EV_ESTIMATED = 1  # the same bits as the journal's event flags
EV_CALL = 2
EV_PRICED = 4  # priced by a cost policy: its request carries the meter's price table


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


class EventError(Exception):
    """A metric policy failed or returned something that cannot be billed; ``reason`` is the
    ``stats().dropped`` key."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def units_ok(units: Any) -> bool:
    """Units on the wire: a non-negative int below 2**53 (never a float, not even 3.0; never a bool)."""
    return isinstance(units, int) and not isinstance(units, bool) and to_count(int(units)) is not None


def valid_event(ev: Any) -> bool:
    return (isinstance(ev, UsageEvent) and units_ok(ev.units)
            and all(isinstance(v, str) and v.strip() for v in (ev.consumer_id, ev.api_id, ev.metric)))


class Built(NamedTuple):
    """What :func:`events_of` made of one call."""

    events: list[tuple[str, str, str, int, int]]  # (consumer_id, api_id, metric, units, flags)
    problems: list[EventError]  # entries that cannot be billed (each counted and dropped)
    price_table: str | None = None  # the price table that priced it (``metrics="cost"``)
    unpriced: bool = False  # a cost policy had no price for it: billed under its fallback


def events_of(usage: Usage, att: Attribution, ts: float) -> Built:
    """The events of one call under its metric policy. Pure but for the user's policy.

    Raises :class:`EventError` when the policy raises (anything) or does not return a mapping."""
    from ._cost import CostPolicy, default_policy

    policy = att.metrics
    price_table = None
    unpriced = False
    try:
        if isinstance(policy, str) and policy == "cost":
            policy = default_policy()
        if type(policy) is CostPolicy:
            parts = policy.bill(usage, att.consumer_id, att.api_id, ts)
            if parts is None:
                unpriced = True
                parts = apply_policy(policy.fallback, usage)
            else:
                price_table = policy.table_version
        else:
            parts = apply_policy(policy, usage)
        items = list(parts.items()) if isinstance(parts, Mapping) else None
    except (KeyboardInterrupt, SystemExit):
        raise  # the caller's (a policy runs on its thread in durable mode), as raised
    except BaseException as exc:  # a user's policy: anything else it raises costs this one call
        raise EventError("policy_error", f"the metrics policy raised {type(exc).__name__}") from None
    if items is None:
        raise EventError("policy_invalid", "the metrics policy did not return a mapping")
    flags = (EV_ESTIMATED if usage.estimated else 0) | (EV_PRICED if price_table is not None else 0)
    out = []
    bad = []
    for metric, units in items:
        # ints only: a float (even 3.0) is a policy bug that would otherwise bill intermittently
        if not isinstance(metric, str) or not metric.strip() or not units_ok(units):
            bad.append(EventError("policy_invalid",
                                  f"the metrics policy returned an invalid entry for {metric!r}"))
            continue
        out.append((att.consumer_id, att.api_id, metric, int(units), flags))
    return Built(out, bad, price_table, unpriced)


def idempotency_key(key: tuple[str, str, str], event_ids: list[str]) -> str:
    """A stable key for one request made of known events (the relay's): the same events under the
    same key give the same value."""
    h = hashlib.sha256()
    for part in key:
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    for eid in sorted(event_ids):
        h.update(eid.encode("utf-8", "surrogatepass"))
        h.update(b"\x01")
    return "am-" + h.hexdigest()[:40]
