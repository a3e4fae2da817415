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

from ._usage import MetricPolicy, check_policy

__all__ = ["Scope", "carry_consumer", "consumer", "current_scope"]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Scope:
    consumer_id: str | None = None
    api_id: str | None = None
    metrics: MetricPolicy | None = None


_scope: contextvars.ContextVar[Scope | None] = contextvars.ContextVar("aerostack_meter_scope", default=None)


def current_scope() -> Scope | None:
    return _scope.get()


def _check_id(name: str, value: object, *, optional: bool) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise TypeError(f"aerostack_meter: {name} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"aerostack_meter: {name} must not be empty")


class consumer:
    """Bill LLM calls made inside this scope to ``consumer_id`` (and ``api_id``, ``metrics``).

    A context manager, an async context manager, and a decorator for sync and async functions.
    Scopes nest (the innermost wins) and are restored on exit, also when an exception escapes.
    Built on ``contextvars``: it follows asyncio tasks and ``asyncio.to_thread``; for thread pools
    use :func:`carry_consumer`.
    """

    __slots__ = ("_scope", "_tokens")

    def __init__(self, consumer_id: str, *, api_id: str | None = None,
                 metrics: MetricPolicy | None = None) -> None:
        _check_id("consumer_id", consumer_id, optional=False)
        _check_id("api_id", api_id, optional=True)
        if metrics is not None:
            check_policy(metrics)
        self._scope = Scope(consumer_id, api_id, metrics)
        self._tokens: list[contextvars.Token[Scope | None]] = []

    def __enter__(self) -> consumer:
        self._tokens.append(_scope.set(self._scope))
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        _scope.reset(self._tokens.pop())

    async def __aenter__(self) -> consumer:
        return self.__enter__()

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.__exit__(et, ev, tb)

    def __call__(self, func: F) -> F:
        scope = self._scope
        if inspect.iscoroutinefunction(func):
            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                token = _scope.set(scope)
                try:
                    return await func(*args, **kwargs)
                finally:
                    _scope.reset(token)

            return cast(F, async_wrapper)

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            token = _scope.set(scope)
            try:
                return func(*args, **kwargs)
            finally:
                _scope.reset(token)

        return cast(F, wrapper)

    @property
    def consumer_id(self) -> str:
        return cast(str, self._scope.consumer_id)

    def __repr__(self) -> str:
        return f"consumer({self._scope.consumer_id!r}, api_id={self._scope.api_id!r})"


def carry_consumer(func: F) -> F:
    """``func`` bound to the current consumer scope, for ``ThreadPoolExecutor.submit`` and
    ``loop.run_in_executor`` (thread pools do not inherit contextvars)."""
    scope = _scope.get()

    @functools.wraps(func)
    def run(*args: Any, **kwargs: Any) -> Any:
        token = _scope.set(scope)
        try:
            return func(*args, **kwargs)
        finally:
            _scope.reset(token)

    return cast(F, run)
