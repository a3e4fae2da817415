"""Who is billed: ``consumer()`` scopes on contextvars, and the resolution of consumer and API id.

Precedence, highest first: the innermost ``consumer()`` scope; the ``consumer_resolver``; the
defaults given to ``wrap(client, ...)``; ``init(default_consumer_id=..., api_id=...)``; the
environment (``AEROSTACK_METER_DEFAULT_CONSUMER``, ``AEROSTACK_API_ID``).
"""

from __future__ import annotations

import contextvars
import functools
import logging
import sys
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar, cast

from ._errors import ConfigError, MissingConsumerError
from ._log import log_limited, log_once
from ._usage import MetricPolicy, check_policy

if TYPE_CHECKING:
    from ._budget import Budget
    from ._config import Settings
    from ._stats import Counters

__all__ = ["Attribution", "Defaults", "Scope", "attribute", "carry_consumer", "consumer",
           "current_scope"]

F = TypeVar("F", bound=Callable[..., Any])


class Scope(NamedTuple):
    """What one ``consumer()`` scope sets. (Named tuples, not dataclasses, here: ``import
    aerostack_meter`` loads this module, and ``dataclasses`` would bring ``inspect`` and ``ast``.)"""

    consumer_id: str | None = None
    api_id: str | None = None
    metrics: MetricPolicy | None = None


class _Frame:
    """One entered scope in one context, linked to the scope it covers (restored on exit).

    The frame lives in the context variable, not on the ``consumer`` object, so one ``consumer``
    object may be entered concurrently from many tasks or threads (a module-level constant).
    """

    __slots__ = ("attribution", "owner", "parent", "scope")

    def __init__(self, scope: Scope, parent: _Frame | None, owner: object) -> None:
        self.scope = scope
        self.parent = parent
        self.owner = owner
        # (settings, default API id, defaults, Attribution): who a call in this scope was last
        # billed to, reused while the same meter and defaults ask (see attribute())
        self.attribution: tuple[object, object, object, Attribution] = _NOT_CACHED


_frame: contextvars.ContextVar[_Frame | None] = contextvars.ContextVar("aerostack_meter_scope", default=None)


def current_scope() -> Scope | None:
    frame = _frame.get()
    return frame.scope if frame is not None else None


def _check_id(name: str, value: object, *, optional: bool, call: str) -> None:
    """A consumer or API id argument: a non-empty string (or ``None`` where optional)."""
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise ConfigError(name, f"must be a string, got {type(value).__name__}", call=call)
    if not value.strip():
        raise ConfigError(name, "must not be empty", call=call)


class consumer:
    """Bill LLM calls made inside this scope to ``consumer_id`` (and ``api_id``, ``metrics``).

    A context manager, an async context manager, and a decorator for sync and async functions
    and generators (a generator has the scope only while its own code runs, never across a
    ``yield``: a ``with`` block held open across one would be its caller's scope meanwhile).
    Scopes nest (the innermost wins) and are restored on exit, also when an exception escapes.
    Built on ``contextvars``: it follows asyncio tasks and ``asyncio.to_thread``; for thread pools
    use :func:`carry_consumer`.
    """

    __slots__ = ("_scope",)

    def __init__(self, consumer_id: str, *, api_id: str | None = None,
                 metrics: MetricPolicy | None = None) -> None:
        _check_id("consumer_id", consumer_id, optional=False, call="consumer")
        _check_id("api_id", api_id, optional=True, call="consumer")
        if metrics is not None:
            check_policy(metrics, call="consumer")
        self._scope = Scope(consumer_id, api_id, metrics)

    def __enter__(self) -> consumer:
        _frame.set(_Frame(self._scope, _frame.get(), self))
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        # Restore what this object's innermost frame in *this* context covered (also any scope
        # entered inside it and left open). Not found: exited in another context; leave it be.
        frame = _frame.get()
        while frame is not None and frame.owner is not self:
            frame = frame.parent
        if frame is not None:
            _frame.set(frame.parent)

    async def __aenter__(self) -> consumer:
        return self.__enter__()

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.__exit__(et, ev, tb)

    def __call__(self, func: F) -> F:
        import inspect  # once per decorated function; not loaded by `import aerostack_meter`

        scope = self._scope
        if inspect.isgeneratorfunction(func):
            return cast(F, _scoped_generator(func, scope))
        if inspect.isasyncgenfunction(func):
            return cast(F, _scoped_async_generator(func, scope))
        if inspect.iscoroutinefunction(func):
            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                token = _frame.set(_Frame(scope, _frame.get(), None))
                try:
                    return await func(*args, **kwargs)
                finally:
                    _frame.reset(token)

            return cast(F, async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            token = _frame.set(_Frame(scope, _frame.get(), None))
            try:
                return func(*args, **kwargs)
            finally:
                _frame.reset(token)

        return cast(F, wrapper)

    @property
    def consumer_id(self) -> str:
        return cast(str, self._scope.consumer_id)

    def __repr__(self) -> str:
        return f"consumer({self._scope.consumer_id!r}, api_id={self._scope.api_id!r})"


# A generator runs in the context of whoever advances it: a scope it entered and held across a
# ``yield`` would be the iterating code's scope until it resumes. So a decorated generator has
# the scope only while its own code runs: set before each step (next, send, throw, close) and
# reset before the value goes out. (The sync and async drivers differ only in the generator
# protocol they speak: send/throw/close, or the awaited asend/athrow/aclose.)


class _Step:
    """The scope, set for one step of a decorated generator. What the generator's own code left
    at the end of a step (a ``with consumer(...)`` it holds open across a ``yield``) is what it
    finds at the start of the next."""

    __slots__ = ("frame", "scope", "token")

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.frame: _Frame | None = None

    def __enter__(self) -> None:
        frame = self.frame
        self.token = _frame.set(frame if frame is not None else _Frame(self.scope, _frame.get(), None))

    def __exit__(self, *exc: object) -> None:
        self.frame = _frame.get()
        _frame.reset(self.token)


def _scoped_generator(func: Callable[..., Any], scope: Scope) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        inner, step = func(*args, **kwargs), _Step(scope)
        value: Any = None
        thrown: BaseException | None = None
        while True:
            with step:
                try:
                    item = inner.send(value) if thrown is None else inner.throw(thrown)
                except StopIteration as stop:
                    return stop.value
            thrown = value = None
            try:
                value = yield item
            except GeneratorExit:
                with step:
                    inner.close()
                raise
            except BaseException as exc:  # thrown in by the caller: into the generator, in scope
                thrown = exc

    return wrapper


def _scoped_async_generator(func: Callable[..., Any], scope: Scope) -> Callable[..., Any]:
    @functools.wraps(func)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        inner, step = func(*args, **kwargs), _Step(scope)
        value: Any = None
        thrown: BaseException | None = None
        while True:
            with step:
                try:
                    item = await (inner.asend(value) if thrown is None else inner.athrow(thrown))
                except StopAsyncIteration:
                    return
            thrown = value = None
            try:
                value = yield item
            except GeneratorExit:
                with step:
                    await inner.aclose()
                raise
            except BaseException as exc:
                thrown = exc

    return wrapper


def carry_consumer(func: F) -> F:
    """``func`` bound to the current consumer scope, for ``ThreadPoolExecutor.submit`` and
    ``loop.run_in_executor`` (thread pools do not inherit contextvars)."""
    frame = _frame.get()

    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        token = _frame.set(frame)
        try:
            return func(*args, **kwargs)
        finally:
            _frame.reset(token)

    return cast(F, run)


class Defaults(NamedTuple):
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


def _resolved(s: Settings, counters: Counters) -> str | None:
    try:
        consumer_id = s.consumer_resolver() if s.consumer_resolver is not None else None
    except BaseException as exc:  # a user's hook: whatever it raises costs this one attribution
        counters.add("internal_errors")
        log_limited("resolver", logging.ERROR, "aerostack_meter: consumer_resolver raised %s",
                    type(exc).__name__)
        return None
    if consumer_id is not None and (not isinstance(consumer_id, str) or not consumer_id.strip()):
        log_limited("resolver_type", logging.ERROR,
                    "aerostack_meter: consumer_resolver returned %r, not a non-empty string",
                    type(consumer_id).__name__)
        return None
    return consumer_id


_NOT_CACHED: tuple[object, object, object, Any] = (None, None, None, None)
# The same for calls made outside any scope (one entry: one meter and no wrap() defaults is the
# common case; anything else is resolved again, as before).
_unscoped: tuple[object, object, object, Any] = _NOT_CACHED


def attribute(s: Settings, default_api_id: str | None, defaults: Defaults | None, site: str,
              counters: Counters) -> Attribution | None:
    """Who a call made now is billed to, or ``None`` (counted, logged) when nobody is.

    Precedence as in the module docstring. Raises :class:`MissingConsumerError` when the policy
    is ``"raise"``: before the request.

    Resolved once per scope: a scope remembers the attribution it last resolved with the same
    settings, API id and defaults (compared by identity: all are immutable), and so does the
    unscoped context. A ``consumer_resolver`` asked for the consumer makes it per call (user
    code, which may answer differently each time).
    """
    global _unscoped
    frame = _frame.get()
    cached = _unscoped if frame is None else frame.attribution
    if cached[0] is s and cached[2] is defaults and cached[1] is default_api_id:
        return cached[3]
    scope = frame.scope if frame is not None else None
    consumer_id = scope.consumer_id if scope is not None else None
    cacheable = consumer_id is not None or s.consumer_resolver is None
    if consumer_id is None and s.consumer_resolver is not None:
        consumer_id = _resolved(s, counters)
    if consumer_id is None and defaults is not None:
        consumer_id = defaults.consumer_id
    if consumer_id is None:
        consumer_id = s.default_consumer_id
    api_id = ((scope.api_id if scope is not None else None)
              or (defaults.api_id if defaults is not None else None) or default_api_id)
    if consumer_id is None or api_id is None:
        if consumer_id is None:
            what, fix = "consumer", ("wrap it in `with aerostack_meter.consumer(...)`, or set "
                                     "init(default_consumer_id=...)")
        else:
            what, fix = "API id", "set init(api_id=...) or AEROSTACK_API_ID"
        if s.on_missing_consumer == "raise":
            raise MissingConsumerError(
                f"aerostack_meter: no {what} to bill this {site} call to; {fix}")
        counters.add("missing_consumer")
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
    attribution = Attribution(consumer_id, api_id, metrics)
    if cacheable:
        if frame is None:
            _unscoped = (s, default_api_id, defaults, attribution)
        else:
            frame.attribution = (s, default_api_id, defaults, attribution)
    return attribution


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
