"""Who is billed: ``consumer()`` scopes on contextvars, and the resolution of consumer and API id.

Precedence, highest first: the innermost ``consumer()`` scope; the ``consumer_resolver``; the
defaults given to ``wrap(client, ...)``; ``init(default_consumer_id=..., api_id=...)``; the
environment (``AEROSTACK_METER_DEFAULT_CONSUMER``, ``AEROSTACK_API_ID``).
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar, cast

from ._errors import ConfigError
from ._usage import MetricPolicy, check_policy

__all__ = ["Scope", "carry_consumer", "consumer", "current_scope"]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Scope:
    consumer_id: str | None = None
    api_id: str | None = None
    metrics: MetricPolicy | None = None


class _Frame:
    """One entered scope in one context, linked to the scope it covers (restored on exit).

    The frame lives in the context variable, not on the ``consumer`` object, so one ``consumer``
    object may be entered concurrently from many tasks or threads (a module-level constant).
    """

    __slots__ = ("owner", "parent", "scope")

    def __init__(self, scope: Scope, parent: _Frame | None, owner: object) -> None:
        self.scope = scope
        self.parent = parent
        self.owner = owner


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

    A context manager, an async context manager, and a decorator for sync and async functions.
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
        if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
            # A scope set around a generator's steps would leak into whoever iterates it.
            raise ConfigError("func", "cannot decorate a generator function; use "
                              "`with aerostack_meter.consumer(...):` inside its body", call="consumer")
        scope = self._scope
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
