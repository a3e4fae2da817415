"""Pricing deferred to the delivery side: ``metrics="cost"`` in durable mode.

On the caller's thread a call priced by a plain cost policy is journaled as its raw usage (a ``U``
record, one journal append: see ``_store.JournalStore.put_usage``); the delivery side (the reporter
thread, an adopting process, ``aerostack-meter drain``) prices it with the policy the record names
and journals the result and the mark in one ``X`` record. A policy is named by its parameters
(markup, unit, metric, fallback): this process's own policy objects are registered under them, so a
replay in this process carries each consumer's remainder in the same policy; another process builds
an equal policy (its remainder starts at zero: a replay may round up to one unit differently).

Deferred: a :class:`CostPolicy` without ``prices`` overrides (they are Python objects another
process cannot rebuild) whose fallback is ``"tokens"`` or ``"split"``, with no ``before_send`` or
OpenTelemetry hook (they run where the events are built). Everything else is priced on the
caller's thread as before.
"""

from __future__ import annotations

import functools
import logging
import threading
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from ._cost import CostPolicy, cost_policy, default_policy, warn_unpriced
from ._events import EV_CALL, EventError, events_of
from ._journal_format import U_ADOPTED, U_ESTIMATED, RawUsage, strings_blob
from ._log import log_once
from ._usage import Usage

__all__ = ["PricingUnavailable", "params_of", "price", "usage_counts"]

_lock = threading.Lock()
# id(policy) -> (policy, its parameters blob or None when not deferrable); the policy is kept
# alive here, so an id is never reused while it is a key
_by_id: dict[int, tuple[CostPolicy, bytes | None]] = {}
# parameters -> the policy that prices records naming them (the first one registered)
_by_params: dict[tuple[str, str, str, str], CostPolicy] = {}
_NO_TOOLS: Any = MappingProxyType({})


class PricingUnavailable(Exception):
    """The price table cannot be loaded here (the ``[cost]`` extra is not installed)."""


def params_of(policy: Any) -> bytes | None:
    """The encoded parameters of a deferrable policy (``"cost"`` or a plain :class:`CostPolicy`),
    else ``None``. Registers the policy (cached per object: a dict lookup after the first call)."""
    if type(policy) is str:
        if policy != "cost":
            return None
        policy = default_policy()
    elif type(policy) is not CostPolicy:
        return None
    got = _by_id.get(id(policy))
    if got is not None:
        return got[1]
    return _register(policy)


def _register(policy: CostPolicy) -> bytes | None:
    blob: bytes | None = None
    fallback = policy.fallback
    if not policy._overrides and isinstance(fallback, str) and fallback in ("tokens", "split"):
        key = (policy.metric, fallback, str(policy.markup), str(policy.unit))
        try:
            blob = strings_blob(*key)
        except UnicodeEncodeError:
            blob = None
        else:
            with _lock:
                _by_params.setdefault(key, policy)
    with _lock:
        _by_id[id(policy)] = (policy, blob)
    return blob


def usage_counts(u: Usage) -> tuple[int, ...]:
    """The token counts a ``U`` record keeps (see ``_journal_format.RawUsage``)."""
    tools = u.server_tool_use
    return (u.input_tokens, u.output_tokens, u.total_tokens, u.cached_input_tokens,
            u.cache_write_tokens, u.cache_write_1h_tokens, u.reasoning_tokens,
            u.audio_input_tokens, u.audio_output_tokens,
            tools.get("web_search_requests", 0) if tools else 0, 0)


def _policy(metric: str, fallback: str, markup: str, unit: str) -> CostPolicy:
    key = (metric, fallback, markup, unit)
    with _lock:
        policy = _by_params.get(key)
    if policy is not None:
        return policy
    try:
        built = cost_policy(markup=Decimal(markup), unit=Decimal(unit), metric=metric,
                            fallback=fallback)  # type: ignore[arg-type]
    except Exception as exc:  # the [cost] extra is missing (ConfigError), or the parameters are bad
        raise PricingUnavailable(str(exc)) from None
    with _lock:
        return _by_params.setdefault(key, built)


def price(rec: RawUsage, counters: Any) -> list[tuple[str, str, str, int, int]]:
    """The events of one ``U`` record, priced now (on the delivery side), counted as the caller's
    path counts them: ``unpriced`` (and a warning once per model), the price table, dropped
    entries. The first event carries ``EV_CALL`` (the reader counts ``calls_metered`` and
    ``events_estimated`` from it) unless the record was adopted from another process.

    Raises :class:`PricingUnavailable` when the price table cannot be loaded here."""
    if not _table_loads():
        raise PricingUnavailable("the price table (genai-prices, the [cost] extra) cannot be imported")
    provider, model, tier, consumer, api, metric, fallback, markup, unit = rec.strings[:9]
    inp, out, total, cached, write, write_1h, reasoning, a_in, a_out, searches, _ = rec.counts
    policy = _policy(metric, fallback, markup, unit)
    usage = Usage(provider, model or None, inp, out, total, cached, write, reasoning, a_in, a_out,
                  MappingProxyType({"web_search_requests": searches}) if searches else _NO_TOOLS,
                  None, bool(rec.flags & U_ESTIMATED), write_1h, tier or None)
    from ._context import Attribution

    try:
        built = events_of(usage, Attribution(consumer, api, policy), rec.ts)
    except EventError as exc:
        _bad(counters, exc.reason, str(exc))
        return []
    for problem in built.problems:
        _bad(counters, problem.reason, str(problem))
    if built.unpriced:
        counters.add("unpriced")
        warn_unpriced(provider, model or None, policy.fallback)
    if built.price_table is not None:
        counters.price_table = built.price_table
    events = built.events
    if events and not rec.flags & U_ADOPTED:
        c, a, m, units, flags = events[0]
        events[0] = (c, a, m, units, flags | EV_CALL)
    return events


@functools.lru_cache(maxsize=1)
def _table_loads() -> bool:
    """Whether the price table can be imported here (asked once per process)."""
    try:
        from ._cost import load_table

        load_table()
    except Exception:
        return False
    return True


def _bad(counters: Any, reason: str, msg: str) -> None:
    counters.drop(reason)
    log_once(reason, logging.ERROR, "aerostack_meter: %s; the event is dropped", msg)
