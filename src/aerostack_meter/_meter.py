"""The Meter: a thin façade over the parts that do the work.

settings (``_config``) · attribution (``_context.attribute``) · event building (``_events.events_of``)
· the store, memory or journal (``_store``) · the delivery loop (``_reporter``) with its retry policy
(``_retry``) · the dead-letter store (``_deadletter``) · exit and signals (``_lifecycle``).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from . import _lifecycle
from ._config import Settings, build_settings
from ._context import Attribution, Defaults, attribute
from ._cost import CostPolicy, warn_unpriced
from ._cost import default_policy as default_cost_policy
from ._deadletter import DeadLetters
from ._deferred import params_of
from ._errors import ConfigError
from ._events import (
    EV_CALL,
    EV_ESTIMATED,
    EV_PRICED,
    EventError,
    UsageEvent,
    events_of,
    valid_event,
)
from ._forkmark import mark as fork_mark
from ._log import log_once, logger
from ._otherkeys import waiting_under_other_keys
from ._paths import default_state_dir, destination_dir, fingerprint_suffix, legacy_dir
from ._rejected import RejectedStore
from ._reporter import Reporter
from ._retry import RetryPolicy
from ._stats import Counters, Stats
from ._store import JournalStore, MemoryStore
from ._usage import _MAX_UNITS, Usage
from .sinks import Sink

if TYPE_CHECKING:
    from ._budget import Budget, Reservation  # a configured budget brings it (init(budget=...))

__all__ = ["Attribution", "Defaults", "Meter"]

_LOCAL_API_ID = "local"
_time = time.time


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
        self.sink: Sink = _make_sink(s)
        bind = getattr(self.sink, "bind_counters", None)
        if bind is not None:
            bind(self.counters)
        self._otel = _otel_recorder(s.otel)
        self._default_api_id = _default_api_id(s)
        self.state_dir, store = _open_store(s, self.sink, self.counters)
        self.dead_letters = DeadLetters(self.state_dir) if self.state_dir is not None else None
        self._reporter = Reporter(
            store, self.sink, self.counters,
            RetryPolicy(s.backoff_base, s.max_backoff, s.max_retry_after, max(60.0, s.max_backoff)),
            flush_interval=s.flush_interval, coalesce=s.coalesce, concurrency=s.concurrency,
            dead_letter=self.dead_letters.add if self.dead_letters is not None else None,
            rejected=RejectedStore(s, self.counters).keep,
            expand_late=self._expand_late, poll=0.1 if s.handle_sigterm else None,
            refused=self._refused, delivered=self._delivered)
        self._delivery_budgets: list[Budget] = []  # Budget.gateway(): told what is delivered
        self._put = store.put
        self._put_many = store.put_many
        self._put_usage = store.put_usage if isinstance(store, JournalStore) else None
        # the fast path (no user code on the caller's thread) is for the default policy alone
        self._hooked = s.before_send is not None or self._otel is not None
        self._here = fork_mark()  # [0] reads 0 in a forked child (no system call per call)
        self._forks = 0  # forks this process is from the one that made the meter (see _generation())
        self._live = False
        self._closed = False
        self._replaced = False  # init() made another meter the process-wide one (see _go_live)
        self._stopping = False  # shutdown() in progress: records go to the store, nothing restarts
        self._live_lock = threading.RLock()  # (reentrant: a signal handler's shutdown() inside _go_live)
        # one shutdown() at a time (reentrant: a signal handler calling it inside another, on the
        # same thread, gets False, as the one in progress has not delivered everything yet)
        self._shutdown_lock = threading.RLock()
        self._shut_ok = True  # what the last shutdown() returned (a later one says it again)
        if s.budget is not None:
            s.budget.bind(self)
        _lifecycle.register(self)
        if isinstance(store, JournalStore) and not s.disabled:
            # Deliver what earlier processes left, and adopt what dying siblings leave, from now on.
            store.adopt()
            self._go_live()

    @property
    def disabled(self) -> bool:
        return self.settings.disabled

    @property
    def durable(self) -> bool:
        return self._reporter.store.durable

    # -- recording (the caller's thread) ---------------------------------------------------------
    def log(self, consumer_id: str, units: int, *, metric: str = "units", api_id: str | None = None) -> None:
        """Log ``units`` (an int, 0 <= units < 2**53) of ``metric`` for ``consumer_id`` under
        ``api_id`` (default: the configured one): on disk (durable mode) when it returns,
        delivered in the background.

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
        if (not self._here[0] or not self._live) and not self._go_live():
            return
        try:
            if self.settings.before_send is not None:
                events = self._before_send([(consumer_id, api, metric, units, 0)], None)
                if events:
                    self._put_many(events, _time())
                return
            self._put(consumer_id, api, metric, units, 0, _time())
        except UnicodeEncodeError:
            self._unencodable(1)

    def attribute(self, defaults: Defaults | None, site: str) -> Attribution | None:
        """Who a call made now is billed to, or ``None`` (counted, logged) when nobody is.

        Raises :class:`MissingConsumerError` when the policy is ``"raise"``: before the request.
        """
        return attribute(self.settings, self._default_api_id, defaults, site, self.counters)

    def record(self, usage: Usage, attribution: Attribution, reservation: Reservation | None = None) -> None:
        """Record one call's usage (on disk in durable mode) before the call returns. A budget
        ``reservation`` is settled to it on the reporter thread."""
        if (not self._here[0] or not self._live) and not self._go_live():
            if reservation is not None:
                _settle(reservation, usage)
            return
        if reservation is not None:
            try:
                self.record(usage, attribution)
            finally:
                # after the record: the reporter settles it in the step that reads the record (or
                # a later one), as Budget.gateway()'s delivery tracking needs (busy_consumers)
                self._reporter.put_late(("settle", reservation, usage))
            return
        if attribution.metrics == "tokens" and not self._hooked:
            try:
                self._put(attribution.consumer_id, attribution.api_id, "tokens", usage.total_tokens,
                          EV_CALL | EV_ESTIMATED if usage.estimated else EV_CALL, _time())
            except UnicodeEncodeError:
                self._unencodable(1)
            return
        self._record_slow(usage, attribution)

    def _record_slow(self, usage: Usage, att: Attribution) -> None:
        if not self.durable:
            # Memory mode: the policy and the hooks run on the reporter thread, off the caller's
            # path. (Durable mode runs them here, so the journal holds what will be billed...)
            self._reporter.put_late(("call", usage, att, _time()))
            return
        if self._put_usage is not None and not self._hooked:
            # ...except a plain cost policy: the raw usage is journaled, priced on the delivery side
            params = params_of(att.metrics)
            if params is not None:
                ts = _time()
                if not self._put_usage(usage, att.consumer_id, att.api_id, params, ts):
                    self._reporter.put_late(("call", usage, att, ts))
                return
        self.counters.add("calls_metered")
        if usage.estimated:
            self.counters.add("events_estimated")
        events = self._events(usage, att)
        if events:
            try:
                self._put_many(events, _time())
            except UnicodeEncodeError:
                self._unencodable(len(events))

    def _events(self, usage: Usage, att: Attribution) -> list[tuple[str, str, str, int, int]]:
        """The policy, then ``before_send``: user code, so anything they raise costs this call only."""
        ts = _time()
        try:
            built = events_of(usage, att, ts)
        except EventError as exc:
            self._bad(exc.reason, str(exc))
            return []
        for problem in built.problems:
            self._bad(problem.reason, str(problem))
        if built.unpriced:
            self.counters.add("unpriced")
            policy = att.metrics if isinstance(att.metrics, CostPolicy) else default_cost_policy()
            warn_unpriced(usage.provider, usage.model, policy.fallback)
        if built.price_table is not None:
            self.counters.price_table = built.price_table
        if self._otel is not None:
            self._otel.record(usage, att.consumer_id, att.api_id, self.counters)
        if self.settings.before_send is None:
            return built.events
        return self._before_send(built.events, usage, built.price_table)

    def _before_send(self, events: list[tuple[str, str, str, int, int]], usage: Usage | None,
                     price_table: str | None = None) -> list[tuple[str, str, str, int, int]]:
        hook = self.settings.before_send
        if hook is None:
            return events
        out = []
        for c, a, m, units, flags in events:
            ev = (UsageEvent(c, a, m, units, timestamp=_time()) if usage is None else
                  UsageEvent(c, a, m, units, usage.provider, usage.model, usage.response_id,
                             usage.estimated, _time(), "", price_table))
            try:
                changed = hook(ev)
            except (KeyboardInterrupt, SystemExit):
                raise  # the caller's (the hook runs on its thread), as raised
            except BaseException as exc:  # anything else costs this one event
                self._bad("before_send_error", f"before_send raised {type(exc).__name__}")
                continue
            if changed is None:
                self.counters.drop("before_send")
                continue
            if not valid_event(changed):
                self._bad("before_send_invalid",
                          "before_send returned something that is not a valid UsageEvent")
                continue
            out.append((changed.consumer_id, changed.api_id, changed.metric, int(changed.units),
                        (flags & EV_PRICED) | (EV_ESTIMATED if changed.estimated else 0)))
        return out

    def record_unfinished(self, reducer: Any, attribution: Attribution, provider: str,
                          reservation: Reservation | None = None) -> None:
        """A stream was garbage collected before it ended: estimated on the reporter thread (a GC
        finalizer must do as little as possible, and never import or compile anything). After the
        exit flush (no reporter thread any more) it is estimated and journaled right here."""
        item = ("stream", reducer, attribution, provider, _time(), reservation)
        if (self._live and self._here[0]) or (self._go_live() and self._live):
            self._reporter.put_late(item)
            return
        if self.durable:  # no delivery thread any more (interpreter exit): journal it from here
            events, ts = self._expand_late(item)
            if events:
                try:
                    self._put_many(events, ts)
                except UnicodeEncodeError:
                    self._unencodable(len(events))

    def _refused(self, consumer_id: str, units: int) -> None:
        """(The reporter) A request was refused for good: its units never reach the wallet."""
        for budget in self._delivery_budgets:
            budget._refused(consumer_id, units)

    def _delivered(self) -> None:
        """(The reporter, each step and for an accepted request a flush() waits for) The
        consumers with nothing left to deliver have had their settled usage delivered."""
        if self._delivery_budgets:
            busy, read_at = self._reporter.busy_consumers()
            for budget in self._delivery_budgets:
                budget._clear(busy, read_at)

    def budget_for(self, defaults: Defaults | None) -> Budget | None:
        """The budget a call is checked against: ``wrap(budget=)``, else ``init(budget=)``."""
        budget = defaults.budget if defaults is not None and defaults.budget is not None else self.settings.budget
        if budget is not None and self not in budget._bound:
            budget.bind(self)
        return budget

    def _expand_late(self, item: Any) -> tuple[list[tuple[str, str, str, int, int]], float]:
        """Work that waited for the reporter thread: a budget settlement, a call (memory mode), or
        a stream garbage collected unfinished (estimated here). Returns events and their time."""
        kind = item[0]
        if kind == "settle":
            _settle(item[1], item[2])
            return [], 0.0
        if kind == "call":
            _, usage, att, ts = item
            self.counters.add("calls_metered")
            if usage.estimated:
                self.counters.add("events_estimated")
            return self._events(usage, att), ts
        _, reducer, att, provider, ts, reservation = item
        try:
            usage = reducer.final(False)
        except Exception:
            self.counters.add("internal_errors")
            usage = None
        _settle(reservation, usage)
        if usage is None:
            self.usage_missing(provider, reducer.model)
            return [], ts
        self.counters.add("calls_metered")
        if usage.estimated:
            self.counters.add("events_estimated")
        return self._events(usage, att), ts

    def usage_missing(self, provider: str, model: str | None, reason: str = "no_usage") -> None:
        """A call that cannot be billed: counted in ``stats().usage_missing`` and, by ``reason``,
        in ``stats().missing``; logged once per provider, model and reason."""
        self.counters.missing(reason)
        if reason == "no_response":
            log_once(f"usage_missing:{provider}:{reason}", logging.WARNING,
                     "aerostack_meter: a call to %s got no answer (a timeout after sending, a dropped "
                     "connection or a cancellation): the provider may have charged for it, but no "
                     "usage came back to bill (counted in stats().missing['no_response'])", provider)
            return
        log_once(f"usage_missing:{provider}:{model}:{reason}", logging.WARNING,
                 "aerostack_meter: a response from %s for model %r carried no usage (%s); not billed",
                 provider, model, reason)

    def _unencodable(self, n: int) -> None:
        self.counters.drop("unencodable", n)
        log_once("unencodable", logging.ERROR,
                 "aerostack_meter: a consumerId, apiId or metric is not valid Unicode "
                 "(unencodable); the event is dropped")

    def _bad(self, reason: str, msg: str) -> None:
        self.counters.drop(reason)
        log_once(reason, logging.ERROR, "aerostack_meter: %s; the event is dropped", msg)

    # -- lifecycle -------------------------------------------------------------------------------
    def _go_live(self) -> bool:
        """Start (or restart) delivery. False when usage cannot be kept (memory mode at exit)."""
        if not self._here[0]:
            self._forked()
        with self._live_lock:
            if self._live:
                return True
            if self._stopping:
                # shutdown() is flushing: the record goes to the store as it is (durable: the
                # journal, left for adoption if that flush ends first); restart only afterwards
                return True
            if _lifecycle.exiting:  # no new thread at exit: journal it (durable) for the next start
                if self._closed and self.durable:
                    self._reporter.store.reopen()
                    self._closed = False
                if self.durable:
                    return True
                self.counters.drop("after_exit")
                log_once("after_exit", logging.WARNING,
                         "aerostack_meter: usage recorded during interpreter exit cannot be "
                         "delivered (durable=False); it is dropped")
                return False
            if self._closed:
                self._closed = False
                self._reporter.store.reopen()
                if self._replaced:  # a call begun before init() replaced this meter ended now
                    from . import _global

                    _global._revived(self)
                    log_once("revived", logging.INFO,
                             "aerostack_meter: a call begun before init() replaced the meter ended "
                             "afterwards; the meter it began with bills it (flush(), stats() and "
                             "shutdown() cover that meter too)")
                else:
                    log_once("reopened", logging.WARNING,
                             "aerostack_meter: the meter was used after shutdown(); it goes on "
                             "recording to the same destination and flushes again at exit")
            if self._closed:  # a signal handler's shutdown() ran inside this (reentrant lock)
                return self.durable
            self._live = self._reporter.ensure_started()
            if self._live or self.durable:
                return True  # durable: on disk, for the next start or `aerostack-meter drain`
        self.counters.drop("after_exit")
        log_once("after_exit", logging.WARNING,
                 "aerostack_meter: usage recorded during interpreter exit cannot be delivered "
                 "(durable=False); it is dropped")
        return False

    def _generation(self) -> int:
        """How many forks this process is from the one the meter was made in (as far as the
        meter has seen: asking notices a fork that ran no at-fork hooks). A call, stream or raw
        response that began in another generation is that process's to bill."""
        if not self._here[0]:
            self._forked()
        return self._forks

    def _forked(self) -> None:
        if self._here[0]:
            return
        self._here[0] = 1
        self._forks += 1
        self._live_lock = threading.RLock()
        self._shutdown_lock = threading.RLock()
        self._live = False
        self._stopping = False  # (a shutdown() another thread was in at the fork is the parent's)
        self._reporter.forked()
        if self.settings.budget is not None:
            self.settings.budget.after_fork()

    # -- delivery ---------------------------------------------------------------------------
    def flush(self, timeout: float | None = None) -> bool:
        """Deliver everything recorded so far. True when nothing is left pending."""
        return self._reporter.flush(timeout)

    async def aflush(self, timeout: float | None = None) -> bool:
        """``flush()`` for asyncio code: waits in a worker thread, never blocks the event loop."""
        import asyncio

        return await asyncio.get_running_loop().run_in_executor(None, self.flush, timeout)

    def shutdown(self, timeout: float | None = None) -> bool:
        """Flush within ``timeout`` (default: the exit budget), then stop the delivery threads.

        What is not delivered by then stays on disk (durable mode: the next start, a live process
        on the same state directory, or ``aerostack-meter drain`` delivers it) or is counted lost
        (``dropped["exit_timeout"]``, ``durable=False``). Using the meter afterwards is allowed: it
        starts again with the same settings and destination.
        """
        if not self._here[0]:
            self._forked()
        with self._shutdown_lock:  # a second call waits for the first, and says what it said
            return self._shutdown(timeout)

    def _shutdown(self, timeout: float | None) -> bool:
        with self._live_lock:
            if self._closed:
                return self._shut_ok and not self._stopping
            self._closed = True
            self._live = False
            self._stopping = True
        ok = False
        try:
            ok, left = self._reporter.stop(self.settings.exit_timeout if timeout is None else timeout)
            try:  # (while _stopping: a call meanwhile records, never restarts under the close)
                self.sink.close()
            except Exception:  # pragma: no cover
                logger.debug("sink.close failed", exc_info=True)
        finally:
            self._stopping = False
            self._shut_ok = ok
        kept = self._reporter.kept if self.durable else 0  # (a full disk kept them in memory)
        if kept:
            self.counters.drop("exit_timeout", kept)
            self._reporter.gave_up = kept
            left -= kept
            log_once("exit_lost", logging.WARNING,
                     "aerostack_meter: %d event(s) could not be delivered before shutdown", kept)
        if left:
            if self.durable:
                log_once("left_on_disk", logging.WARNING,
                         "aerostack_meter: %d event(s) not delivered yet are kept in %s; the next "
                         "start or `aerostack-meter drain` delivers them", left, self.state_dir)
            else:
                self.counters.drop("exit_timeout", left)
                self._reporter.gave_up = left  # (undone if the meter is used again: see Reporter._start)
                log_once("exit_lost", logging.WARNING,
                         "aerostack_meter: %d event(s) could not be delivered before shutdown", left)
        return ok

    def stats(self) -> Stats:
        pending = self._reporter.pending
        return self.counters.snapshot(pending=pending, spooled=pending if self.durable else 0,
                                      durable=self.durable, paused=self._reporter.paused)

    def __repr__(self) -> str:
        return f"Meter({self.settings!r})"


def _make_sink(s: Settings) -> Sink:
    if isinstance(s.sink, str):
        from .sinks._redis import RedisSink

        return RedisSink(s.sink)
    if s.sink is not None:
        return s.sink
    return _default_sink(s)


def _otel_recorder(option: Any) -> Any:
    if option is False or option is None:
        return None
    from .otel import OTelRecorder

    return OTelRecorder(None if option is True else option)


def _default_sink(s: Settings) -> Sink:
    if s.api_key is not None:
        from .sinks._aerostack import AerostackSink  # imports httpx: only when it is the sink

        return AerostackSink(s.api_key, base_url=s.base_url, connect_timeout=s.connect_timeout,
                             read_timeout=s.read_timeout, concurrency=s.concurrency, verify=s.verify,
                             transport=s.transport, max_retry_after=s.max_retry_after)
    if not s.disabled:  # usage goes somewhere the user may not expect: say so, once
        log_once("no_api_key", logging.WARNING,
                 "aerostack_meter: no API key (init(api_key=...) or AEROSTACK_API_KEY); usage is "
                 "recorded in the local ledger %s, not sent to the billing API "
                 "(read it with `aerostack-meter report`)", s.ledger_path)
    from .sinks._ledger import LedgerSink

    return LedgerSink(s.ledger_path)


def _default_api_id(s: Settings) -> str | None:
    if s.api_id:
        return s.api_id
    # without a key the API id is only a label, except for a Redis stream (a relay bills it)
    if s.api_key is None and not isinstance(s.sink, str):
        return _LOCAL_API_ID
    return None


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


def _open_store(s: Settings, sink: Sink, counters: Counters) -> tuple[str | None, MemoryStore | JournalStore]:
    """The journal in the state directory, or memory (``durable=False``, a sink without a
    ``destination``, or no writable state directory: warned once, ``stats().durable`` is False)."""
    memory = MemoryStore(s.max_queue_size, on_overflow=_overflow_counter(counters, s.max_queue_size))
    destination = getattr(sink, "destination", None)
    if not s.durable or s.disabled or not isinstance(destination, str):
        return None, memory
    root = s.state_dir or default_state_dir()
    fp = fingerprint_suffix(getattr(sink, "key_fingerprint", None))
    try:
        # one directory per destination and key: usage is only ever sent with the key it was
        # journaled under (the unkeyed directory of older versions is adopted as before)
        directory = destination_dir(root, destination, fp)
        store = JournalStore(directory, s.spool_max_bytes, counters,
                             legacy=legacy_dir(root, destination) if fp is not None else None)
    except OSError as exc:
        counters.add("journal_errors")
        log_once("state_dir", logging.WARNING,
                 "aerostack_meter: the state directory %s cannot be used (%s); usage is kept in "
                 "memory only and is lost if the process dies (stats().durable is False)",
                 root, exc.strerror or type(exc).__name__)
        return None, memory
    waiting_under_other_keys(root, destination, fp, counters)
    return directory, store


def _overflow_counter(counters: Counters, limit: int) -> Any:
    def overflowed(n: int) -> None:
        counters.add("queue_overflows", n)
        log_once("queue_full", logging.WARNING,
                 "aerostack_meter: the event queue is full (max_queue_size=%d); units are kept "
                 "as running totals, per-event detail is lost", limit)

    return overflowed


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
