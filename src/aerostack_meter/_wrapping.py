"""The wrapper factory shared by patching and proxying, and the patch registry.

``make_wrapper`` builds one ``wrapt`` wrapper for a method: resolve who is billed (before the
request, so ``on_missing_consumer="raise"`` stops unbillable spend), let the endpoint prepare the
arguments, call through with a re-entrancy guard (so an SDK helper that calls another metered
method is counted once, and so is a call both patched and proxied), and hand the result to the
call's lifecycle. The sync and async wrappers differ only by an ``await``.
"""

from __future__ import annotations

import collections
import contextvars
import functools
import importlib
import inspect
import logging
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

import wrapt

from ._budget import Budget, Reservation
from ._call import NO_KWARGS, Call, Endpoint, Kind, record_failed
from ._context import attribute as _attribute
from ._errors import BudgetExceededError
from ._log import log_limited
from ._meter import Defaults, Meter
from ._streams import ManagerProxy, RawProxy, proxy_stream

__all__ = [
    "ACTIVE",
    "ROUTE",
    "MeterWrapper",
    "PatchSet",
    "Route",
    "Target",
    "begin",
    "current_route",
    "enter_outer",
    "finish",
    "inner_noted",
    "is_async_callable",
    "is_ours",
    "make_routed_wrapper",
    "make_wrapper",
    "metered_inside",
    "plain_replacement",
    "prefetch",
]

# A metered call is in progress in this context: an SDK helper calling another metered method, a
# call both proxied and patched, a method-level wrapper over the base client: the outermost meters.
# Its value is True, or the HTTP layer's state of the call in flight (one context variable, set
# and reset once per call, serves both: see providers/_stainless.py).
ACTIVE: contextvars.ContextVar[object] = contextvars.ContextVar("aerostack_meter_active", default=False)
_active = ACTIVE

MeterGetter = Callable[[], "Meter | None"]
C = TypeVar("C", bound=Call)


class Route(NamedTuple):
    """Who meters the calls made inside one ``wrap()`` proxy call: the proxy's meter and defaults.
    A provider metered at its HTTP layer (``Provider.base_client``) reads it there."""

    get_meter: MeterGetter
    defaults: Defaults | None


_route: contextvars.ContextVar[Route | None] = contextvars.ContextVar("aerostack_meter_route", default=None)
ROUTE = _route  # read by the HTTP layer's hook on every call (current_route() without the call)


def current_route() -> Route | None:
    return _route.get()


# A framework's own call in progress in this context (litellm's, seen by its callbacks): its id. A
# metered SDK call made inside it is noted, so the framework's integration bills that call once.
_outer: contextvars.ContextVar[str | None] = contextvars.ContextVar("aerostack_meter_outer", default=None)
_inner: collections.OrderedDict[str, None] = collections.OrderedDict()
_inner_lock = threading.Lock()
_INNER_MAX = 4096  # ids kept for an integration to ask about (the oldest are forgotten)


def enter_outer(call_id: str | None) -> None:
    """A framework call begins in this context (``None``: it ended)."""
    _outer.set(call_id)


def metered_inside(call_id: str) -> bool:
    """Whether an SDK call the meter metered ran inside this framework call (asked once)."""
    with _inner_lock:
        return _inner.pop(call_id, False) is None


def inner_noted(call_id: str) -> bool:
    """``metered_inside`` without its lock, for a GC callback (which may run on a thread holding
    it); the note is left to age out."""
    return call_id in _inner


def _note_inner(call_id: str) -> None:
    with _inner_lock:
        _inner[call_id] = None
        if len(_inner) > _INNER_MAX:
            _inner.popitem(last=False)


def begin(meter: Meter, endpoint: Endpoint, defaults: Defaults | None, instance: Any,
          kwargs: Mapping[str, Any], site: str, prepare: bool | None = True,
          wait: bool = True, cls: type[C] = Call) -> tuple[C | None, Any, Any]:  # type: ignore[assignment]
    """The one place a metered call begins, before its request is sent: who is billed (may raise
    :class:`MissingConsumerError`), the endpoint's ``prepare`` (guarded; skipped when ``prepare``
    is False: the request then goes exactly as the caller wrote it, with the endpoint's
    ``passthrough`` hint; ``None``: as written, and no stream will need a hint), then the budget's reservation
    (may raise :class:`BudgetExceededError`: nothing is sent). ``wait=False`` on an event loop (the
    balance was prefetched). Returns the call (``None``: not billed, already counted), the
    arguments to send and the reducer's hint (``cls``: a :class:`Call` subclass to build, for a
    layer that keeps its own state on the call). The call ends in ``Call.end`` (a response),
    ``Call.end_stream`` (a stream) or ``Call.fail`` (no response)."""
    attribution = _attribute(meter.settings, meter._default_api_id, defaults, site, meter.counters)  # may raise
    if attribution is None:
        return None, kwargs, None
    hint = None
    if prepare is not None:
        try:
            if prepare:
                kwargs, hint = endpoint.prepare_call(meter, instance, kwargs)  # type: ignore[arg-type]
            else:
                hint = endpoint.passthrough(kwargs)
        except Exception:
            _internal(meter, "prepare")
    # Call.__init__, without calling the class (its type call and __init__ frame: ~1.5 k
    # instructions per call, a third of begin)
    call = _new(cls)
    call.meter = meter
    call.attribution = attribution
    call.endpoint = endpoint
    call.kwargs = kwargs
    call.done = False
    call.reservation = None
    call.forks = meter._forks if meter._here[0] else meter._generation()
    outer = _outer.get()
    if outer is not None:
        _note_inner(outer)
    if meter.settings.budget is not None or (defaults is not None and defaults.budget is not None):
        budget = meter.budget_for(defaults)
        if budget is not None:
            call.reservation = _reserve(meter, budget, attribution.consumer_id, endpoint, kwargs, wait)
    return call, kwargs, hint


_begin = begin
_new = object.__new__


def _reserve(meter: Meter, budget: Budget, consumer_id: str, endpoint: Endpoint, kwargs: Mapping[str, Any],
             wait: bool) -> Reservation | None:
    """The budget's reservation for this call; raises BudgetExceededError (nothing is sent)."""
    try:
        return budget.reserve(meter, consumer_id, endpoint.provider, kwargs, wait=wait,
                              output=endpoint.produces_output)
    except BudgetExceededError:
        raise
    except Exception:  # a bug of ours must not fail the call: fail open
        _internal(meter, "budget")
        return None


def finish(call: Call, hint: Any, result: Any, returns: Kind | None = None) -> Any:
    """Meter ``result`` (or arrange for its stream to be metered) and return what the user gets.

    ``returns`` is the kind the patch target declared (``None``: the endpoint's ``kind()`` decides).
    Every provider hook called here is guarded: an exception is counted in ``internal_errors`` and
    the user gets ``result`` untouched."""
    endpoint = call.endpoint
    try:
        kind = returns or endpoint.kind(result)
        if kind == "response":
            if not call.done:
                usage = endpoint.usage(result)
                if usage is not None and call.reservation is None:
                    # Call.end of a plain response, in this frame (one frame fewer per call)
                    call.done = True
                    call.kwargs = NO_KWARGS
                    try:
                        call.meter.record(usage, call.attribution)
                    except Exception:  # pragma: no cover - metering must never break the caller
                        record_failed(call.meter)
                else:
                    # the model names a missing usage only (a getattr of an absent name can cost µs)
                    call.end(usage, None if usage is not None else getattr(result, "model", None))
            return result
        if kind == "stream":
            stream = proxy_stream(endpoint.stream_in(result), call, endpoint.reducer(call.kwargs, hint))
            return endpoint.with_stream(result, stream)
        if kind == "manager":
            return ManagerProxy(result, call, endpoint.reducer(call.kwargs, hint))
        if kind == "raw":
            parsed = endpoint.parse_raw(result)
            if parsed is not None:
                finish(call, hint, parsed)
            return RawProxy(result, lambda body: finish(call, hint, body))
    except Exception:
        _internal(call.meter, "finish")
    return result


async def prefetch(meter: Meter, defaults: Defaults | None, site: str) -> None:
    """On an event loop, before :func:`begin` with ``wait=False``: await the budget's balance
    lookup, if the budget reads one (never blocking the loop)."""
    budget = meter.budget_for(defaults)
    if budget is not None and budget.reads_balance:
        await _prefetch(meter, budget, defaults, site)


async def _prefetch(meter: Meter, budget: Budget, defaults: Defaults | None, site: str) -> None:
    try:
        attribution = meter.attribute(defaults, site)
    except Exception:  # _begin raises it again, where it belongs
        return
    if attribution is not None:
        await budget.prefetch(meter, attribution.consumer_id)


def _internal(meter: Meter, where: str) -> None:
    meter.counters.add("internal_errors")
    log_limited("wrap_" + where, logging.ERROR, "aerostack_meter: internal error in %s; the call "
                "goes on unmetered", where, exc_info=True)


def make_wrapper(endpoint: Endpoint, is_async: bool, get_meter: MeterGetter,
                 defaults: Defaults | None = None, returns: Kind | None = None) -> Callable[..., Any]:
    """A ``wrapt`` wrapper function ``(wrapped, instance, args, kwargs)`` for one method."""
    site = f"{endpoint.provider} {endpoint.name}"  # named in errors; built once, not per call
    # An endpoint with Endpoint's own prepare_call and passthrough (readers only) has nothing to
    # prepare: begin() does not call it (a frame fewer per call).
    prepare = True if _prepares(endpoint) else None

    def sync_wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        meter = get_meter()
        if meter is None or meter.settings.disabled or _active.get():
            return wrapped(*args, **kwargs)
        call, kwargs, hint = _begin(meter, endpoint, defaults, instance, kwargs, site, prepare)
        if call is None:
            return wrapped(*args, **kwargs)
        token = _active.set(True)
        try:
            result = wrapped(*args, **kwargs)
        except BaseException as exc:
            call.fail(exc)
            raise
        finally:
            _active.reset(token)
        return finish(call, hint, result, returns)

    async def async_wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...],
                            kwargs: dict[str, Any]) -> Any:
        meter = get_meter()
        if meter is None or meter.settings.disabled or _active.get():
            return await wrapped(*args, **kwargs)
        if meter.settings.budget is not None or (defaults is not None and defaults.budget is not None):
            budget = meter.budget_for(defaults)
            if budget is not None and budget.reads_balance:  # a lookup is awaited, never blocking the loop
                await _prefetch(meter, budget, defaults, site)
        call, kwargs, hint = _begin(meter, endpoint, defaults, instance, kwargs, site, prepare, wait=False)
        if call is None:
            return await wrapped(*args, **kwargs)
        token = _active.set(True)
        try:
            result = await wrapped(*args, **kwargs)
        except BaseException as exc:
            call.fail(exc)
            raise
        finally:
            _active.reset(token)
        return finish(call, hint, result, returns)

    return async_wrapper if is_async else sync_wrapper


def _prepares(endpoint: Endpoint) -> bool:
    """Whether ``endpoint`` prepares a call or gives a hint (not :class:`Endpoint`'s no-ops)."""
    cls, own = type(endpoint), getattr(endpoint, "__dict__", {})
    return ("prepare_call" in own or "passthrough" in own
            or cls.prepare_call is not Endpoint.prepare_call or cls.passthrough is not Endpoint.passthrough)


def make_routed_wrapper(endpoint: Endpoint, is_async: bool, get_meter: MeterGetter,
                        defaults: Defaults | None, hooks: PatchSet | None = None
                        ) -> Callable[..., Any]:
    """For ``wrap()`` of a provider metered at its HTTP layer: the call is not metered here; the
    HTTP layer meters what it sends with this proxy's meter and defaults (:class:`Route`). A stream
    manager that sends only when entered (``endpoint.returns_manager``) is entered under the same
    route. ``hooks``: the layer's, put back if ``uninstrument()`` removed them since."""
    route = Route(get_meter, defaults)

    def sync_wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if hooks is not None and not hooks._active:
            hooks.patch()
        token = _route.set(route)
        try:
            return wrapped(*args, **kwargs)
        finally:
            _route.reset(token)

    def manager_wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        result = sync_wrapper(wrapped, instance, args, kwargs)
        try:
            if endpoint.kind(result) == "manager":
                return RoutedManager(result, route)
        except Exception:
            pass
        return result

    async def async_wrapper(wrapped: Any, instance: Any, args: tuple[Any, ...],
                            kwargs: dict[str, Any]) -> Any:
        if hooks is not None and not hooks._active:
            hooks.patch()
        token = _route.set(route)
        try:
            return await wrapped(*args, **kwargs)
        finally:
            _route.reset(token)

    if is_async:
        return async_wrapper
    return manager_wrapper if endpoint.returns_manager else sync_wrapper


class RoutedManager(wrapt.ObjectProxy):  # type: ignore[type-arg]
    """A stream manager (``messages.stream(...)``) whose request is sent on enter, under a route."""

    def __init__(self, wrapped: Any, route: Route) -> None:
        super().__init__(wrapped)
        self._self_route = route

    def __enter__(self) -> Any:
        token = _route.set(self._self_route)
        try:
            return self.__wrapped__.__enter__()
        finally:
            _route.reset(token)

    def __exit__(self, *exc: Any) -> Any:
        return self.__wrapped__.__exit__(*exc)

    async def __aenter__(self) -> Any:
        token = _route.set(self._self_route)
        try:
            return await self.__wrapped__.__aenter__()
        finally:
            _route.reset(token)

    async def __aexit__(self, *exc: Any) -> Any:
        return await self.__wrapped__.__aexit__(*exc)


def is_async_callable(fn: Any) -> bool:
    """An ``async def``, also behind ``functools.wraps`` decorators that are plain functions (the
    SDKs' ``@required_args`` wraps every async ``create`` in a sync function returning a coroutine)."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(inspect.unwrap(fn))


class MeterWrapper(wrapt.FunctionWrapper):  # type: ignore[type-arg]
    """Marks our own wrappers, so we never wrap twice and unpatch only what is ours."""


_OURS = "__aerostack_meter__"  # set on a plain function we put in place of a method (Target.plain)

PlainFactory = Callable[[MeterGetter, Callable[..., Any]], Callable[..., Any]]


def is_ours(fn: Any) -> bool:
    """Whether ``fn`` is a wrapper of ours: a :class:`MeterWrapper`, or a plain replacement."""
    return isinstance(fn, MeterWrapper) or getattr(fn, _OURS, False) is True


def plain_replacement(fn: Callable[..., Any], original: Callable[..., Any]) -> Callable[..., Any]:
    """``fn``, a plain function put in place of ``original``: with its name, docstring and
    ``__wrapped__``, and marked as ours (:func:`is_ours`)."""
    functools.update_wrapper(fn, original)
    setattr(fn, _OURS, True)
    return fn


@dataclass(frozen=True)
class Target:
    """One method to patch: ``module.attr_path`` (e.g. ``"Completions.create"``)."""

    module: str
    path: str
    endpoint: Endpoint | None
    is_async: bool | None = None  # None: detected from the original function
    returns: Kind | None = None  # what the method returns; None: the endpoint's kind() decides
    # Instead of metering: a wrapper factory ``hook(get_meter) -> wrapt wrapper`` for a method that
    # is not a metered call but must tell one something (a helper's close() ending its stream).
    hook: Callable[[MeterGetter], Callable[..., Any]] | None = None
    # Or a factory ``plain(get_meter, original) -> function`` that returns the replacement itself,
    # a plain function calling ``original(self, *args, **kwargs)``: no wrapt layer (binding a
    # FunctionWrapper and re-packing the arguments) on a method every call passes through.
    plain: PlainFactory | None = None


class PatchSet:
    """A provider's patch targets, applied once and removed exactly.

    A target in a module the SDK has not imported yet (its resources load lazily, on first use) is
    wrapped when that module is imported (a wrapt post-import hook), not imported by us: forcing
    those imports costs more than all the rest of enabling (OpenAI's beta types alone: ~200 ms).
    """

    def __init__(self, name: str, targets: Callable[[], Sequence[Target]]) -> None:
        self.name = name
        self._targets = targets
        self._lock = threading.Lock()
        self._applied: list[tuple[Any, str, Any, Any, list[bool]]] = []
        self._active = False
        self._generation = 0  # a post-import hook of an earlier patch() finds it changed: no-op

    @property
    def patched(self) -> bool:
        return self._active

    def patch(self) -> int:
        """Wrap every target found in the installed SDK; a second call is a no-op. Returns the
        number wrapped now (targets in modules not imported yet follow on their import)."""
        with self._lock:
            if self._active:
                return 0
            self._active = True
            self._generation += 1
            generation = self._generation
            by_module: dict[str, list[Target]] = {}
            for target in self._targets():
                by_module.setdefault(target.module, []).append(target)
        # Outside the lock: an import hook runs under the module's import lock and takes ours.
        for name, targets in by_module.items():
            if name in sys.modules:
                try:
                    module = importlib.import_module(name)  # waits for one still initialising
                except ImportError:
                    continue
                self._apply(module, targets, generation)
            else:
                wrapt.register_post_import_hook(
                    functools.partial(self._apply, targets=targets, generation=generation), name)
        return len(self._applied)

    def _apply(self, module: Any, targets: list[Target], generation: int) -> None:
        from . import _global

        for target in targets:
            # Resolving may import (SDK packages resolve names lazily, and that import may fire
            # another of our hooks on this thread): only the swap below holds the lock.
            *parents, attr = target.path.split(".")
            owner: Any = module
            try:
                for p in parents:
                    owner = getattr(owner, p)
            except AttributeError:
                continue
            original = _lookup(owner, attr)
            if original is None or is_ours(original):
                continue
            is_async = target.is_async
            if is_async is None:
                is_async = is_async_callable(original)
            on = [True]

            def getter(on: list[bool] = on) -> Meter | None:
                # the process-wide meter, read as _global.get_meter() would (one frame less per call)
                return _global._meter if on[0] else None

            wrapper: Any
            if target.plain is not None:
                wrapper = plain_replacement(target.plain(getter, original), original)
            else:
                if target.hook is not None:
                    fn = target.hook(getter)
                elif target.endpoint is not None:
                    fn = make_wrapper(target.endpoint, is_async, getter, None, target.returns)
                else:
                    continue
                wrapper = MeterWrapper(original, fn)
            with self._lock:
                if generation != self._generation:
                    return
                if _lookup(owner, attr) is not original:  # wrapped meanwhile (by us or another)
                    continue
                setattr(owner, attr, wrapper)
                self._applied.append((owner, attr, original, wrapper, on))

    def unpatch(self) -> None:
        """Restore the originals (and forget the pending import hooks). Where another library
        wrapped on top of ours, ours is disabled in place instead (removing it would remove theirs
        too)."""
        with self._lock:
            self._active = False
            self._generation += 1
            for owner, attr, original, wrapper, on in reversed(self._applied):
                on[0] = False
                if _lookup(owner, attr) is wrapper:
                    setattr(owner, attr, original)
            self._applied.clear()


def _lookup(owner: Any, attr: str) -> Any:
    """The attribute as set on ``owner`` (a class's own, not an inherited one)."""
    return owner.__dict__.get(attr) if isinstance(owner, type) else getattr(owner, attr, None)
