"""The Meter: settings, the reporter and the sink, and the operations users call."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import signal
import sys
import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import FrameType
from typing import Any, NamedTuple

from ._budget import Budget, Reservation
from ._config import Settings, build_settings
from ._context import current_scope
from ._cost import CostPolicy, warn_unpriced
from ._cost import default_policy as default_cost_policy
from ._errors import ConfigError, MissingConsumerError
from ._events import UsageEvent
from ._log import log_limited, log_once, logger
from ._reporter import Reporter
from ._stats import Counters, Stats
from ._usage import _MAX_UNITS, MetricPolicy, Usage, apply_policy, to_count
from .sinks import AerostackSink, LedgerSink, Sink

__all__ = ["Attribution", "Defaults", "Meter"]

_LOCAL_API_ID = "local"


@dataclass(frozen=True, slots=True)
class Defaults:
    """Attribution defaults bound to one wrapped client by ``wrap(client, ...)``."""

    consumer_id: str | None = None
    api_id: str | None = None
    metrics: MetricPolicy | None = None
    budget: Budget | None = None


class Attribution(NamedTuple):
    """Who one call is billed to. Built on every metered call: a named tuple is the cheapest
    immutable record to construct (half the cost of a frozen dataclass)."""

    consumer_id: str
    api_id: str
    metrics: MetricPolicy


# Queue items are plain tuples, the cheapest thing to build on the caller's thread:
#   (_LOG, consumer_id, api_id, metric, units, timestamp)   from log()
#   (_CALL, usage, attribution, timestamp, reservation)      from a metered SDK call
#   (_LATE, reducer, attribution, timestamp, provider, reservation)  a stream GC'd unfinished
# ``reservation`` is the call's budget reservation (or None), settled on the reporter thread.
_LOG = 0
_CALL = 1
_LATE = 2


class Meter:
    """A configured meter: records usage and reports it in the background.

    Most applications use the process-wide meter through :func:`aerostack_meter.init`; create a
    ``Meter`` yourself for tests or for several billing configurations in one process.
    """

    def __init__(self, api_key: str | None = None, *, api_id: str | None = None,
                 base_url: str | None = None, **options: Any) -> None:
        self.settings: Settings = build_settings(api_key, api_id=api_id, base_url=base_url, **options)
        s = self.settings
        self.counters = Counters()
        if isinstance(s.metrics, CostPolicy) or (isinstance(s.metrics, str) and s.metrics == "cost"):
            self.counters.price_table = (s.metrics if isinstance(s.metrics, CostPolicy)
                                         else default_cost_policy()).table_version
        self.sink: Sink = self._make_sink(s)
        bind = getattr(self.sink, "bind_counters", None)
        if bind is not None:
            bind(self.counters)
        self._otel = _otel_recorder(s.otel)
        if s.spool_path:
            from ._reporter_spool import SpoolReporter

            self._reporter: Reporter = SpoolReporter(s, self.sink, self.counters, self._expand)
        else:
            self._reporter = Reporter(s, self.sink, self.counters, self._expand)
        self._closed = False
        self._default_api_id = self._api_id()
        if s.budget is not None:
            s.budget.bind(self)
        ref = weakref.ref(self)
        atexit.register(_exit_hook, ref)
        if s.handle_sigterm:
            _install_sigterm(ref)

    @staticmethod
    def _make_sink(s: Settings) -> Sink:
        if isinstance(s.sink, str):
            from .sinks._redis import RedisSink

            return RedisSink(s.sink)
        if s.sink is not None:
            return s.sink
        return Meter._default_sink(s)

    @staticmethod
    def _default_sink(s: Settings) -> Sink:
        if s.api_key is not None:
            return AerostackSink(s)
        if not s.disabled:  # usage goes somewhere the user may not expect: say so, once
            log_once("no_api_key", logging.WARNING,
                     "aerostack_meter: no API key (init(api_key=...) or AEROSTACK_API_KEY); usage is "
                     "recorded in the local ledger %s, not sent to the billing API "
                     "(read it with `aerostack-meter report`)", s.ledger_path)
        return LedgerSink(s.ledger_path)

    @property
    def disabled(self) -> bool:
        return self.settings.disabled

    # -- recording --------------------------------------------------------------------------
    def log(self, consumer_id: str, units: int, *, metric: str = "units", api_id: str | None = None) -> None:
        """Log ``units`` (an int, 0 <= units < 2**53) of ``metric`` for ``consumer_id`` under
        ``api_id`` (default: the configured one): non-blocking, delivered by the reporter.

        ``metric`` defaults to ``"units"``, the billing API's own default metric. Raises
        :class:`ConfigError` at once for a bad argument or when no API id is given or configured;
        nothing later raises.
        """
        if not (type(consumer_id) is str and consumer_id.strip() and type(units) is int
                and 0 <= units < _MAX_UNITS and type(metric) is str and metric.strip()
                and (api_id is None or (type(api_id) is str and api_id.strip()))):
            _check_log_args(consumer_id, units, metric, api_id)
        if self.settings.disabled:
            return
        api = api_id or self._default_api_id
        if api is None:
            raise ConfigError("api_id", "none given and none configured (init(api_id=...) or "
                              "AEROSTACK_API_ID)", call="log")
        # A plain tuple: the event object is built on the reporter thread, off the caller's path.
        self._reporter.put((_LOG, consumer_id, api, metric, units, time.time()))

    def _api_id(self, *candidates: str | None) -> str | None:
        for c in candidates:
            if c:
                return c
        if self.settings.api_id:
            return self.settings.api_id
        # without a key the API id is only a label, except for a Redis stream (a relay bills it)
        if self.settings.api_key is None and not isinstance(self.settings.sink, str):
            return _LOCAL_API_ID
        return None

    def attribute(self, defaults: Defaults | None, site: str) -> Attribution | None:
        """Who a call made now is billed to, or ``None`` (counted, logged) when nobody is.

        Raises :class:`MissingConsumerError` when the policy is ``"raise"``: before the request.
        """
        s = self.settings
        scope = current_scope()
        consumer_id = scope.consumer_id if scope is not None else None
        if consumer_id is None and s.consumer_resolver is not None:
            try:
                consumer_id = s.consumer_resolver()
            except Exception as exc:
                self.counters.add("internal_errors")
                log_limited("resolver", logging.ERROR, "aerostack_meter: consumer_resolver raised %s",
                            type(exc).__name__)
                consumer_id = None
            if consumer_id is not None and (not isinstance(consumer_id, str) or not consumer_id.strip()):
                log_limited("resolver_type", logging.ERROR,
                            "aerostack_meter: consumer_resolver returned %r, not a non-empty string",
                            type(consumer_id).__name__)
                consumer_id = None
        if consumer_id is None and defaults is not None:
            consumer_id = defaults.consumer_id
        if consumer_id is None:
            consumer_id = s.default_consumer_id
        api_id = ((scope.api_id if scope is not None else None)
                  or (defaults.api_id if defaults is not None else None) or self._default_api_id)
        if consumer_id is None or api_id is None:
            if consumer_id is None:
                what, fix = "consumer", ("wrap it in `with aerostack_meter.consumer(...)`, or set "
                                         "init(default_consumer_id=...)")
            else:
                what, fix = "API id", "set init(api_id=...) or AEROSTACK_API_ID"
            if s.on_missing_consumer == "raise":
                raise MissingConsumerError(
                    f"aerostack_meter: no {what} to bill this {site} call to; {fix}")
            self.counters.add("missing_consumer")
            if s.on_missing_consumer == "warn":
                if consumer_id is None:  # a code path without a scope: once per call site
                    where = _caller_site()
                    log_once(f"missing:consumer:{where}", logging.WARNING,
                             "aerostack_meter: %s call at %s has no consumer; its usage is not "
                             "billed (%s)", site, where, fix)
                else:  # a missing setting: once per process
                    log_once("missing:api_id", logging.WARNING,
                             "aerostack_meter: no API id configured; usage of %s calls is not "
                             "billed (%s)", site, fix)
            return None
        metrics = (scope.metrics if scope is not None and scope.metrics is not None
                   else defaults.metrics if defaults is not None and defaults.metrics is not None
                   else s.metrics)
        return Attribution(consumer_id, api_id, metrics)

    def record(self, usage: Usage, attribution: Attribution, reservation: Reservation | None = None) -> None:
        """Hand one call's usage to the reporter (the policy and the counting run on its thread)."""
        self._reporter.put((_CALL, usage, attribution, time.time(), reservation))

    def record_unfinished(self, reducer: Any, attribution: Attribution, provider: str,
                          reservation: Reservation | None = None) -> None:
        """A stream was garbage collected before it ended: estimate it on the reporter thread
        (a GC finalizer must do as little as possible, and never import or compile anything)."""
        self._reporter.put((_LATE, reducer, attribution, time.time(), provider, reservation))

    def budget_for(self, defaults: Defaults | None) -> Budget | None:
        """The budget a call is checked against: ``wrap(budget=)``, else ``init(budget=)``."""
        budget = defaults.budget if defaults is not None and defaults.budget is not None else self.settings.budget
        if budget is not None and id(self) not in budget._bound:
            budget.bind(self)
        return budget

    def usage_missing(self, provider: str, model: str | None, reason: str = "no_usage") -> None:
        """A call that cannot be billed: counted in ``stats().usage_missing`` and, by ``reason``,
        in ``stats().missing``; logged once per provider, model and reason."""
        self.counters.missing(reason)
        log_once(f"usage_missing:{provider}:{model}:{reason}", logging.WARNING,
                 "aerostack_meter: a %s response for model %r carried no usage (%s); not billed",
                 provider, model, reason)

    def _expand(self, item: Any) -> Iterable[UsageEvent]:
        """Queue item -> events. Runs on the reporter thread; never raises."""
        if type(item) is UsageEvent:
            events: list[UsageEvent] = [item]
        elif item[0] == _LOG:
            _, consumer_id, api_id, metric, units, ts = item
            events = [UsageEvent(consumer_id, api_id, metric, units, None, None, None, False, ts)]
        elif item[0] == _LATE:
            _, reducer, att, ts, provider, reservation = item
            try:
                usage = reducer.final(False)
            except Exception:
                self.counters.add("internal_errors")
                usage = None
            if usage is None:
                self.usage_missing(provider, reducer.model)
                events = []
            else:
                events = self._events_of(usage, att, ts)
            _settle(reservation, usage)
        else:
            events = self._events_of(item[1], item[2], item[3])
            _settle(item[4], item[1])
        hook = self.settings.before_send
        if hook is None:
            return events
        out = []
        for ev in events:
            try:
                changed = hook(ev)
            except Exception as exc:
                self._bad("before_send_error", f"before_send raised {type(exc).__name__}")
                continue
            if changed is None:
                self.counters.drop("before_send")
                continue
            if not _valid_event(changed):
                self._bad("before_send_invalid", "before_send returned something that is not a valid UsageEvent")
                continue
            out.append(changed)
        return out

    def _events_of(self, usage: Usage, att: Attribution, ts: float) -> list[UsageEvent]:
        self.counters.add("calls_metered")
        if usage.estimated:
            self.counters.add("events_estimated")
        policy = att.metrics
        price_table = None
        try:
            if isinstance(policy, str) and policy == "cost":
                policy = default_cost_policy()
            if type(policy) is CostPolicy:
                parts = policy.bill(usage, att.consumer_id, att.api_id, ts)
                if parts is None:
                    self.counters.add("unpriced")
                    warn_unpriced(usage.provider, usage.model, policy.fallback)
                    parts = apply_policy(policy.fallback, usage)
                else:
                    price_table = self.counters.price_table = policy.table_version
            else:
                parts = apply_policy(policy, usage)
            items = list(parts.items()) if isinstance(parts, Mapping) else None
        except Exception as exc:
            self._bad("policy_error", f"the metrics policy raised {type(exc).__name__}")
            return []
        if items is None:
            self._bad("policy_invalid", "the metrics policy did not return a mapping")
            return []
        events = []
        for metric, units in items:
            # ints only: a float (even 3.0) is a policy bug that would otherwise bill intermittently
            if not isinstance(metric, str) or not metric.strip() or not _units_ok(units):
                self._bad("policy_invalid", f"the metrics policy returned an invalid entry for {metric!r}")
                continue
            events.append(UsageEvent(att.consumer_id, att.api_id, metric, int(units), usage.provider,
                                     usage.model, usage.response_id, usage.estimated, ts, "",
                                     price_table))
        if self._otel is not None:
            self._otel.record(usage, att.consumer_id, att.api_id, self.counters)
        return events

    def _bad(self, reason: str, msg: str) -> None:
        self.counters.drop(reason)
        log_once(reason, logging.ERROR, "aerostack_meter: %s; the event is dropped", msg)

    # -- delivery ---------------------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> bool:
        """Deliver everything recorded so far. True when nothing is left pending."""
        return self._reporter.flush(timeout)

    async def aflush(self, timeout: float | None = None) -> bool:
        """``flush()`` for asyncio code: waits in a worker thread, never blocks the event loop."""
        return await asyncio.get_running_loop().run_in_executor(None, self.flush, timeout)

    def shutdown(self, timeout: float | None = None) -> bool:
        """Flush within ``timeout`` (default: the exit budget), then stop the reporter."""
        if self._closed:
            return True
        self._closed = True
        ok = self._reporter.stop(self.settings.exit_timeout if timeout is None else timeout)
        spool = getattr(self._reporter, "spool", None)
        if spool is not None:
            spool.close()
        try:
            self.sink.close()
        except Exception:  # pragma: no cover
            logger.debug("sink.close failed", exc_info=True)
        return ok

    def stats(self) -> Stats:
        spool = getattr(self._reporter, "spool", None)
        spooled = spool.count() if spool is not None else 0
        return self.counters.snapshot(pending=self._reporter.pending, spooled=spooled)

    def __repr__(self) -> str:
        return f"Meter({self.settings!r})"


def _otel_recorder(option: Any) -> Any:
    if option is False or option is None:
        return None
    from .otel import OTelRecorder

    return OTelRecorder(None if option is True else option)


def _settle(reservation: Reservation | None, usage: Usage | None) -> None:
    """Settle a call's budget reservation to its usage (released when there is none)."""
    if reservation is None:
        return
    try:
        if usage is None:
            reservation.release()
        else:
            reservation.settle_usage(usage)
    except Exception:  # pragma: no cover - never break the reporter; free the reservation
        reservation.release()


def _units_ok(units: Any) -> bool:
    """Units on the wire: a non-negative int (never a float, not even 3.0; never a bool)."""
    return isinstance(units, int) and not isinstance(units, bool) and to_count(int(units)) is not None


def _valid_event(ev: Any) -> bool:
    return (isinstance(ev, UsageEvent) and _units_ok(ev.units)
            and all(isinstance(v, str) and v.strip() for v in (ev.consumer_id, ev.api_id, ev.metric)))


def _check_log_args(consumer_id: Any, units: Any, metric: Any, api_id: Any) -> None:
    for name, value in (("consumer_id", consumer_id), ("metric", metric)):
        if not isinstance(value, str):
            raise ConfigError(name, f"must be a string, got {type(value).__name__}", call="log")
        if not value.strip():
            raise ConfigError(name, "must not be empty", call="log")
    if api_id is not None and (not isinstance(api_id, str) or not api_id.strip()):
        raise ConfigError("api_id", "must be a non-empty string or None", call="log")
    if isinstance(units, bool) or not isinstance(units, int):
        raise ConfigError("units", f"must be an int, got {type(units).__name__}", call="log")
    if units < 0:
        raise ConfigError("units", f"must be non-negative, got {units}", call="log")
    raise ConfigError("units", "is too large (max 2**53 - 1)", call="log")


def _caller_site() -> str:
    """The first frame outside this library, wrapt and every registered provider's SDK."""
    from .providers import all_providers

    frame: FrameType | None = sys._getframe(2)
    skip = (__name__.rsplit(".", 1)[0], "wrapt", *(p.package for p in all_providers()))
    while frame is not None:
        mod = frame.f_globals.get("__name__", "")
        if not mod.startswith(skip):
            return f"{frame.f_code.co_filename}:{frame.f_lineno}"
        frame = frame.f_back
    return "<unknown>"


def _exit_hook(ref: weakref.ref[Meter]) -> None:
    meter = ref()
    if meter is not None and not meter._closed:
        with contextlib.suppress(Exception):  # never fail interpreter exit
            meter.shutdown()


def _install_sigterm(ref: weakref.ref[Meter]) -> None:
    if threading.current_thread() is not threading.main_thread():
        log_once("sigterm_thread", logging.WARNING,
                 "aerostack_meter: handle_sigterm needs init() on the main thread; not installed")
        return
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum: int, frame: FrameType | None) -> None:
        meter = ref()
        if meter is not None:
            meter.shutdown()
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_IGN:
            return
        else:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.raise_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, handler)
