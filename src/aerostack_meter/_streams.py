"""Transparent proxies for SDK streams, stream managers and raw responses.

Each proxy is a ``wrapt.ObjectProxy``: the user gets the SDK's object back in all but identity
(``isinstance``, attributes, helper methods). A proxy ends its :class:`Call` exactly once: on
exhaustion, on an error, on ``close()``/``aclose()``, on leaving ``with``/``async with``, on
cancellation, or, as a last resort, when it is garbage collected (a weak reference with a
callback, kept in a module registry until the stream ends; streams still open at interpreter exit
are ended by one ``atexit`` hook).
"""

from __future__ import annotations

import atexit
import logging
import weakref
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import wrapt

from ._call import Call, Reducer
from ._log import log_limited

__all__ = ["AsyncStreamProxy", "ManagerProxy", "RawProxy", "StreamProxy", "proxy_stream"]

_MAX_FAILURES = 8  # observer failures after which a stream is no longer observed (then estimated)

# -- the garbage-collection fallback --------------------------------------------------------------
# What ``weakref.finalize`` does, at a fraction of its cost per stream (it builds an info object in
# Python and writes a class attribute): a weak reference with a callback, held here (keyed by its
# id: hashing a weak reference hashes its referent) until the stream ends.
_open: dict[int, tuple[weakref.ref[Any], Call, Reducer]] = {}
_exit_hooked = False
_ref = weakref.ref


def _collected(ref: weakref.ref[Any]) -> None:
    """The stream was garbage collected before it ended: estimated (on the reporter thread)."""
    try:
        entry = _open.pop(id(ref), None)
        if entry is not None:
            entry[1].end_unfinished(entry[2])
    except Exception:  # pragma: no cover - interpreter shutdown; never raise from a GC callback
        pass


def _end_open_streams() -> None:
    """At interpreter exit (as ``weakref.finalize`` does): streams still open are estimated."""
    while _open:
        try:
            _, (_, call, reducer) = _open.popitem()
        except KeyError:  # pragma: no cover - emptied by another thread meanwhile
            break
        call.end_unfinished(reducer)


def _hook_exit() -> None:
    # Registered on the first stream, not at import: after init()'s own exit hook, so that it runs
    # before the meter shuts down (exit hooks run last registered first).
    global _exit_hooked
    if not _exit_hooked:
        _exit_hooked = True
        atexit.register(_end_open_streams)


def watch(obj: Any, call: Call, reducer: Reducer) -> int:
    """Arrange for ``call`` to end (estimated) if ``obj`` is collected first; returns the key that
    :func:`unwatch` takes once the stream ends."""
    if not _exit_hooked:
        _hook_exit()
    ref = _ref(obj, _collected)
    key = id(ref)
    _open[key] = (ref, call, reducer)
    return key


def unwatch(key: int) -> None:
    _open.pop(key, None)


class _Observer:
    """One stream's metering state: a plain object with slots (attribute reads through a ``wrapt``
    proxy cost several times more). ``next`` is the SDK's stream (sync: iterated by
    :func:`_observed`, the generators a sync proxy hands out as its iterators) or its ``__anext__``
    (async: called by :class:`_AsyncLoop`, the iterators an async proxy hands out). The proxy
    forwards ``next()``, ``close()`` and the context-manager exits. It is what the
    garbage-collection fallback watches: it lives as long as the proxy or a loop iterating it."""

    __slots__ = ("__weakref__", "call", "failures", "key", "next", "observe", "reducer")

    def __init__(self, call: Call, reducer: Reducer, nxt: Any) -> None:
        self.call = call
        self.reducer = reducer
        self.observe = reducer.observe  # bound once; a no-op if it keeps raising
        self.failures = 0
        self.next = nxt
        # watch(self, ...), inlined: this runs before every stream's first chunk
        if not _exit_hooked:
            _hook_exit()
        ref = _ref(self, _collected)
        self.key = key = id(ref)
        _open[key] = (ref, call, reducer)

    def end(self, complete: bool) -> None:
        _open.pop(self.key, None)
        # a stream whose observer failed is not known to be complete: estimated, never missing
        self.call.end_stream(self.reducer, complete and not self.failures)

    def failed(self) -> None:
        """The provider's observer raised on an event the SDK yielded fine: count it (once per
        stream), log it, and hand the event on; the next events are observed as usual (usage the
        provider reports later is still exact). A stream that keeps failing stops being observed
        and is estimated at its end."""
        self.failures += 1
        if self.failures == 1:
            self.call.meter.counters.add("internal_errors")
            log_limited("observe_" + self.call.endpoint.provider, logging.ERROR,
                        "aerostack_meter: could not read a %s stream event; the event is passed on "
                        "unread", self.call.endpoint.provider, exc_info=True)
        elif self.failures >= _MAX_FAILURES:
            self.observe = _ignore


def _observed(obs: _Observer, it: Iterator[Any]) -> Iterator[Any]:
    """A synchronous stream's per-chunk path, as a generator: the user's loop resumes it in C and
    it iterates the SDK's own iterator in C (a Python ``__next__`` would add a call per chunk, and
    a call of the SDK's ``__next__`` where the user's loop resumes its generator). It references
    the observer, never the reverse (no cycle: a dropped stream is freed at once, and the observer's
    weak reference ends its call). Closed or dropped mid-way (``GeneratorExit``): the proxy's
    ``close()`` / ``__exit__`` or that weak reference ends the call, not this."""
    observe = obs.observe
    try:
        for item in it:
            try:
                if observe(item):  # hide injected events (an extra usage-only chunk)
                    continue
            except Exception:
                obs.failed()
                observe = obs.observe  # a no-op once it keeps raising
            yield item
    except GeneratorExit:
        raise
    except BaseException:
        obs.end(False)
        raise
    obs.end(True)


class _AsyncLoop:
    """One ``async for`` over an asynchronous stream (what ``aiter(proxy)`` gives): as the SDK's
    own ``__aiter__`` gives a new async generator per call over the one stream, each is a new
    object over the one observer, and closing it (``aclose()``) leaves the stream open for the
    next loop. Its per-event path reads only its own slots (``next``, ``observe``: the observer's,
    copied when it is made and again after a failure)."""

    __slots__ = ("next", "obs", "observe")

    def __init__(self, obs: _Observer) -> None:
        self.obs = obs
        self.next = obs.next
        self.observe = obs.observe

    def __aiter__(self) -> _AsyncLoop:
        return self

    async def __anext__(self) -> Any:
        nxt = self.next
        while True:
            try:
                item = await nxt()
            except StopAsyncIteration:
                self.obs.end(True)
                raise
            except BaseException:  # includes CancelledError
                self.obs.end(False)
                raise
            try:
                if not self.observe(item):  # hide injected events (an extra usage-only chunk)
                    return item
            except Exception:
                self.obs.failed()
                self.observe = self.obs.observe  # a no-op once it keeps raising
                return item

    async def aclose(self) -> None:
        """What closing the SDK's loop generator does to the stream: nothing (it stays open)."""


class StreamProxy(wrapt.ObjectProxy):  # type: ignore[type-arg]
    """A synchronous SDK stream (``Stream``, a helper's stream object) observed chunk by chunk.
    Built by :func:`proxy_stream` (``wrapt``'s own ``__init__``, then the observer: no Python
    ``__init__`` of ours runs before the first chunk). ``iter(proxy)`` is as the bare stream's:
    where the SDK's ``__iter__`` makes a new generator over the stream's events per call (OpenAI's
    and Anthropic's ``Stream``), each call gives a new :func:`_observed` over those same events
    (closing one, or leaving its loop, leaves the stream open for the next); a stream that is its
    own iterator (a generator, an object whose ``__iter__`` returns itself) gets one generator for
    every loop. ``next(proxy)`` resumes one generator of its own."""

    _self_obs: _Observer
    _self_it: Iterator[Any] | None = None  # next()'s generator (every loop's: an own-iterator stream)
    _self_own = False  # the SDK's stream is its own iterator

    def __iter__(self) -> Iterator[Any]:
        if self._self_own:
            return self._self_it  # type: ignore[return-value]
        obs = self._self_obs
        stream = obs.next
        events = obs.call.endpoint.events(stream)
        if events is stream:
            events = _iterate(stream)
            if events is stream:
                self._self_own = True
                it = self._self_it
                if it is None:
                    self._self_it = it = _observed(obs, events)
                return it
        return _observed(obs, events)

    def __next__(self) -> Any:
        it = self._self_it
        if it is None:
            self._self_it = it = self.__iter__()
        return next(it)

    def __enter__(self) -> StreamProxy:
        self.__wrapped__.__enter__()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> Any:
        self._self_obs.end(False)
        return self.__wrapped__.__exit__(et, ev, tb)

    def close(self) -> None:
        self._self_obs.end(False)
        self.__wrapped__.close()

    def __copy__(self) -> Any:
        return _copy(self)


class AsyncStreamProxy(wrapt.ObjectProxy):  # type: ignore[type-arg]
    """An asynchronous SDK stream observed event by event (built by :func:`proxy_stream`).
    ``aiter(proxy)`` is as the bare stream's: a new :class:`_AsyncLoop` per call over the one
    stream (the SDK's ``__aiter__`` makes a new async generator per call), or one for every loop
    where the SDK's stream is its own async iterator. ``anext(proxy)`` resumes a loop of its own."""

    _self_obs: _Observer
    _self_loop: _AsyncLoop | None = None  # anext()'s loop (every loop's: an own-iterator stream)
    _self_own = False

    def __aiter__(self) -> Any:
        if self._self_own:
            loop = self._self_loop
            if loop is None:
                self._self_loop = loop = _AsyncLoop(self._self_obs)
            return loop
        return _AsyncLoop(self._self_obs)

    def __anext__(self) -> Any:
        loop = self._self_loop
        if loop is None:
            self._self_loop = loop = _AsyncLoop(self._self_obs)
        return loop.__anext__()

    async def __aenter__(self) -> AsyncStreamProxy:
        await self.__wrapped__.__aenter__()
        return self

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> Any:
        self._self_obs.end(False)
        return await self.__wrapped__.__aexit__(et, ev, tb)

    async def close(self) -> None:
        self._self_obs.end(False)
        await self.__wrapped__.close()

    async def aclose(self) -> None:
        self._self_obs.end(False)
        inner = getattr(self.__wrapped__, "aclose", None) or self.__wrapped__.close
        await inner()

    def __copy__(self) -> Any:
        return _copy(self)


def _copy(proxy: Any) -> Any:
    """``copy.copy()`` of an observed stream: what the SDK's copy is (a stream sharing the
    original's events), observed by the same observer (the call is billed once, whichever copy
    reads the events)."""
    import copy

    twin = type(proxy)(copy.copy(proxy.__wrapped__))
    twin._self_obs = proxy._self_obs
    return twin


def _ignore(event: Any) -> bool:
    return False


_END = object()


def _iterate(stream: Any) -> Iterator[Any]:
    """What a ``for`` loop over ``stream`` iterates (an object with ``__next__`` and no
    ``__iter__``: its ``__next__`` until ``StopIteration``)."""
    try:
        return iter(stream)
    except TypeError:
        return iter(stream.__next__, _END)


def proxy_stream(stream: Any, call: Call, reducer: Reducer) -> Any:
    """The user's stream, observed: a :class:`StreamProxy` or :class:`AsyncStreamProxy`."""
    if hasattr(stream, "__next__") and not hasattr(stream, "__anext__"):
        proxy: Any = StreamProxy(stream)
        proxy._self_obs = _Observer(call, reducer, stream)  # iterated on first use
        return proxy
    anxt = getattr(stream, "__anext__", None)
    if anxt is not None or (hasattr(stream, "__aiter__") and not hasattr(stream, "__iter__")):
        events = call.endpoint.events(stream)
        if events is not stream:
            anxt = events.__anext__
        proxy = AsyncStreamProxy(stream)
        proxy._self_obs = _Observer(call, reducer, anxt if anxt is not None else stream.__aiter__().__anext__)
        if events is stream and anxt is not None:  # its own async iterator: one loop for all, as bare
            proxy._self_own = True
        return proxy
    proxy = StreamProxy(stream)
    proxy._self_obs = _Observer(call, reducer, stream)
    return proxy


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
        self._self_watch: int | None = None

    def _self_arm(self, inner: Any) -> Any:
        self._self_inner = inner
        self._self_watch = watch(self, self._self_call, self._self_reducer)
        return inner

    def _self_end(self) -> None:
        if self._self_watch is not None:
            unwatch(self._self_watch)
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
