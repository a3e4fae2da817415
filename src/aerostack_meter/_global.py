"""The process-wide meter behind the module-level functions."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._context import current_scope

if TYPE_CHECKING:
    # imported by init() or the first log(): `import aerostack_meter` does not load the meter
    from ._meter import Meter
    from ._stats import Stats

__all__ = ["aflush", "current_consumer", "flush", "get_meter", "init", "log", "shutdown", "stats"]

_lock = threading.RLock()
_meter: Meter | None = None
_init_args: tuple[Any, ...] | None = None
#: meters ``init()`` replaced that a call begun before it restarted (id -> meter): ``flush()``,
#: ``stats()`` and ``shutdown()`` cover them until ``shutdown()`` stops them again
_retired: dict[int, Meter] = {}


def get_meter() -> Meter | None:
    """The process-wide meter, or ``None`` before ``init()``."""
    return _meter


def _ensure() -> Meter:
    meter = _meter
    if meter is None:
        from ._meter import Meter

        with _lock:
            if _meter is None:
                _set(Meter(), None)
            meter = _meter
    assert meter is not None
    return meter


def _set(meter: Meter | None, args: tuple[Any, ...] | None) -> None:
    global _meter, _init_args
    _meter, _init_args = meter, args


def init(api_key: str | None = None, *, api_id: str | None = None, base_url: str | None = None,
         **options: Any) -> Meter:
    """Configure the process-wide meter and instrument every installed, supported SDK.

    Idempotent: a second call with the same arguments returns the same meter; with other
    arguments it replaces the old meter (instrumentation is applied once). Calls and streams in
    flight at that moment are billed once, by the meter they started with.
    Bad settings raise :class:`aerostack_meter.ConfigError` naming the setting.
    """
    from ._instrument import instrument
    from ._meter import Meter

    args = (api_key, api_id, base_url, tuple(sorted(options.items(), key=lambda kv: kv[0])))
    with _lock:
        if _meter is not None and _init_args == args and not _meter._closed:
            return _meter
        meter = Meter(api_key, api_id=api_id, base_url=base_url, **options)
        old = _meter
        _set(meter, args)
    if old is not None:
        old._replaced = True
        old.shutdown()
    if not meter.disabled:
        instrument(meter.settings.instrument)
    return meter


def log(consumer_id: str, units: int, *, metric: str = "units", api_id: str | None = None) -> None:
    """Manually log tokens or custom metric usage: non-blocking, through the reporter."""
    _ensure().log(consumer_id, units, metric=metric, api_id=api_id)


def _revived(meter: Meter) -> None:
    """(``Meter._go_live``) A meter ``init()`` replaced delivers again: a call begun before the
    replacement ended after it."""
    _retired[id(meter)] = meter


def _all() -> list[Meter]:
    """The meters ``flush()``/``shutdown()`` act on: the retired ones still delivering, oldest
    first, then the process-wide one."""
    meters = [m for m in list(_retired.values()) if m is not _meter]
    return [*meters, _meter] if _meter is not None else meters


def _each(timeout: float | None, act: Callable[[Meter, float | None], bool]) -> bool:
    """``act(meter, seconds left)`` on each of :func:`_all`, within ``timeout`` for them all;
    True when every one returned True."""
    deadline = None if timeout is None else time.monotonic() + timeout
    ok = True
    for meter in _all():
        ok = act(meter, None if deadline is None else max(0.0, deadline - time.monotonic())) and ok
    return ok


def flush(timeout: float | None = None) -> bool:
    """Deliver everything recorded so far; True when nothing is left pending. ``timeout`` in
    seconds; ``None`` waits as long as delivery takes (through an outage of the billing API too;
    it returns ``False`` at once while the API refuses the key). What is not delivered stays on
    disk (durable mode) and is delivered later. Also covers a meter ``init()`` replaced while a
    call begun under it was in flight (that call is billed by it)."""
    if not _retired:
        meter = _meter
        return True if meter is None else meter.flush(timeout)
    return _each(timeout, lambda meter, left: meter.flush(left))


async def aflush(timeout: float | None = None) -> bool:
    """``flush()`` that awaits without blocking the event loop."""
    if not _retired:
        meter = _meter
        return True if meter is None else await meter.aflush(timeout)
    import asyncio

    return await asyncio.get_running_loop().run_in_executor(None, flush, timeout)


def shutdown(timeout: float | None = None) -> bool:
    """Flush within ``timeout`` and stop the delivery threads of the process-wide meter (and of
    any meter ``init()`` replaced that a call begun before restarted).

    The meter stays the process-wide one: a later metered call or ``log()`` starts it again with
    the same settings and destination (logged once), so nothing is lost and nothing silently goes
    elsewhere. ``init()`` replaces it.
    """
    def stop(meter: Meter, left: float | None) -> bool:
        if meter is not _meter:
            _retired.pop(id(meter), None)
        return meter.shutdown(left)

    return _each(timeout, stop)


def stats() -> Stats:
    """A typed snapshot of the process-wide meter's counters. ``pending`` and ``spooled`` also
    count what a meter ``init()`` replaced still holds (calls begun before the replacement)."""
    meter = _meter
    if meter is None:
        from ._stats import Stats

        return Stats()
    snapshot = meter.stats()
    others = [m.stats() for m in _all() if m is not meter]
    if not others:
        return snapshot
    import dataclasses

    return dataclasses.replace(snapshot, pending=snapshot.pending + sum(o.pending for o in others),
                               spooled=snapshot.spooled + sum(o.spooled for o in others))


def current_consumer() -> str | None:
    """The consumer an LLM call made here and now would be billed to (for logs and debugging)."""
    scope = current_scope()
    if scope is not None and scope.consumer_id:
        return scope.consumer_id
    meter = _meter
    if meter is None:
        return None
    resolver = meter.settings.consumer_resolver
    if resolver is not None:
        try:
            value = resolver()
            if isinstance(value, str) and value:
                return value
        except Exception:
            return None
    return meter.settings.default_consumer_id
