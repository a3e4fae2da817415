"""Transparent proxies for SDK streams, stream managers and raw responses.

Each proxy is a ``wrapt.ObjectProxy``: the user gets the SDK's object back in all but identity
(``isinstance``, attributes, helper methods). A proxy ends its :class:`Call` exactly once: on
exhaustion, on an error, on ``close()``/``aclose()``, on leaving ``with``/``async with``, on
cancellation, or, as a last resort, when it is garbage collected (``weakref.finalize``).
"""

from __future__ import annotations

import logging
import weakref
from types import TracebackType
from typing import Any

import wrapt

from ._call import Call, Reducer
from ._log import log_limited

__all__ = ["AsyncStreamProxy", "ManagerProxy", "RawProxy", "StreamProxy", "proxy_stream"]

_MAX_FAILURES = 8  # observer failures after which a stream is no longer observed (then estimated)


class _StreamBase(wrapt.ObjectProxy):  # type: ignore[type-arg]
    def __init__(self, wrapped: Any, call: Call, reducer: Reducer) -> None:
        super().__init__(wrapped)
        self._self_call = call
        self._self_reducer = reducer
        self._self_observe = reducer.observe  # bound once; a no-op if it keeps raising
        self._self_failures = 0
        self._self_finalizer = weakref.finalize(self, call.end_unfinished, reducer)

    def _self_end(self, complete: bool) -> None:
        self._self_finalizer.detach()
        # a stream whose observer failed is not known to be complete: estimated, never missing
        self._self_call.end_stream(self._self_reducer, complete and not self._self_failures)

    def _self_observe_failed(self) -> None:
        """The provider's observer raised on an event the SDK yielded fine: count it (once per
        stream), log it, and hand the event on; the next events are observed as usual (usage the
        provider reports later is still exact). A stream that keeps failing stops being observed
        and is estimated at its end."""
        self._self_failures += 1
        if self._self_failures == 1:
            self._self_call.meter.counters.add("internal_errors")
            log_limited("observe_" + self._self_call.endpoint.provider, logging.ERROR,
                        "aerostack_meter: could not read a %s stream event; the event is passed on "
                        "unread", self._self_call.endpoint.provider, exc_info=True)
        elif self._self_failures >= _MAX_FAILURES:
            self._self_observe = _ignore


class StreamProxy(_StreamBase):
    """A synchronous SDK stream (``Stream``, a helper's stream object) observed chunk by chunk."""

    def __init__(self, wrapped: Any, call: Call, reducer: Reducer) -> None:
        super().__init__(wrapped, call, reducer)
        nxt = getattr(wrapped, "__next__", None)
        self._self_next = nxt if nxt is not None else iter(wrapped).__next__

    def __iter__(self) -> StreamProxy:
        return self

    def __next__(self) -> Any:
        nxt = self._self_next
        while True:
            try:
                item = nxt()
            except StopIteration:
                self._self_end(True)
                raise
            except BaseException:
                self._self_end(False)
                raise
            try:
                if not self._self_observe(item):  # hide injected events (an extra usage-only chunk)
                    return item
            except Exception:
                self._self_observe_failed()
                return item

    def __enter__(self) -> StreamProxy:
        self.__wrapped__.__enter__()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> Any:
        self._self_end(False)
        return self.__wrapped__.__exit__(et, ev, tb)

    def close(self) -> None:
        self._self_end(False)
        self.__wrapped__.close()


class AsyncStreamProxy(_StreamBase):
    """An asynchronous SDK stream observed event by event."""

    def __init__(self, wrapped: Any, call: Call, reducer: Reducer) -> None:
        super().__init__(wrapped, call, reducer)
        nxt = getattr(wrapped, "__anext__", None)
        self._self_anext = nxt if nxt is not None else wrapped.__aiter__().__anext__

    def __aiter__(self) -> AsyncStreamProxy:
        return self

    async def __anext__(self) -> Any:
        nxt = self._self_anext
        while True:
            try:
                item = await nxt()
            except StopAsyncIteration:
                self._self_end(True)
                raise
            except BaseException:  # includes CancelledError
                self._self_end(False)
                raise
            try:
                if not self._self_observe(item):  # hide injected events (an extra usage-only chunk)
                    return item
            except Exception:
                self._self_observe_failed()
                return item

    async def __aenter__(self) -> AsyncStreamProxy:
        await self.__wrapped__.__aenter__()
        return self

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> Any:
        self._self_end(False)
        return await self.__wrapped__.__aexit__(et, ev, tb)

    async def close(self) -> None:
        self._self_end(False)
        await self.__wrapped__.close()

    async def aclose(self) -> None:
        self._self_end(False)
        inner = getattr(self.__wrapped__, "aclose", None) or self.__wrapped__.close
        await inner()


def _ignore(event: Any) -> bool:
    return False


def proxy_stream(stream: Any, call: Call, reducer: Reducer) -> Any:
    if hasattr(stream, "__anext__") or (hasattr(stream, "__aiter__") and not hasattr(stream, "__iter__")):
        return AsyncStreamProxy(stream, call, reducer)
    return StreamProxy(stream, call, reducer)


class ManagerProxy(wrapt.ObjectProxy):  # type: ignore[type-arg]
    """A stream manager (``with client.messages.stream(...) as s``), metered when the block exits.

    The helper's stream object is handed to the user unchanged: its final-message calls iterate
    it internally, so usage is read from its final snapshot on exit (``Endpoint.snapshot_usage``),
    with an estimate if the block was left before the end.
    """

    def __init__(self, wrapped: Any, call: Call, reducer: Reducer) -> None:
        super().__init__(wrapped)
        self._self_call = call
        self._self_reducer = reducer
        self._self_inner: Any = None
        # Armed on a successful enter only: a manager never entered, or whose request failed in
        # __enter__, made no call to bill.
        self._self_finalizer: weakref.finalize[Any, Any] | None = None

    def _self_arm(self, inner: Any) -> Any:
        self._self_inner = inner
        self._self_finalizer = weakref.finalize(self, self._self_call.end_unfinished, self._self_reducer)
        return inner

    def _self_end(self) -> None:
        if self._self_finalizer is not None:
            self._self_finalizer.detach()
        call, reducer = self._self_call, self._self_reducer
        if call.done:
            return
        usage = None
        if self._self_inner is not None:
            try:
                usage = call.endpoint.snapshot_usage(self._self_inner, reducer)
            except Exception:
                usage = None
        if usage is not None:
            call.end(usage)
        else:
            call.end_stream(reducer, False)

    def __enter__(self) -> Any:
        return self._self_arm(self.__wrapped__.__enter__())

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> Any:
        try:
            return self.__wrapped__.__exit__(et, ev, tb)
        finally:
            self._self_end()

    async def __aenter__(self) -> Any:
        return self._self_arm(await self.__wrapped__.__aenter__())

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> Any:
        try:
            return await self.__wrapped__.__aexit__(et, ev, tb)
        finally:
            self._self_end()


class RawProxy(wrapt.ObjectProxy):  # type: ignore[type-arg]
    """A raw response (``.with_raw_response`` / ``.with_streaming_response``): usage is read
    from what ``parse()`` returns, and a parsed stream is proxied like any other stream."""

    def __init__(self, wrapped: Any, on_parsed: Any) -> None:
        super().__init__(wrapped)
        self._self_on_parsed = on_parsed
        self._self_cache: dict[int, Any] = {}

    def _self_wrap(self, parsed: Any) -> Any:
        key = id(parsed)
        cached = self._self_cache.get(key)
        if cached is None:
            cached = self._self_on_parsed(parsed)
            self._self_cache[key] = cached
        return cached

    def parse(self, *args: Any, **kwargs: Any) -> Any:
        parsed = self.__wrapped__.parse(*args, **kwargs)
        if hasattr(parsed, "__await__"):
            async def awaited() -> Any:
                return self._self_wrap(await parsed)

            return awaited()
        return self._self_wrap(parsed)
