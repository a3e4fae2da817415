"""litellm, declared: metered through litellm's own extension point, its callback interface.

litellm reaches several providers with its own HTTP code (``responses()``, ``anthropic/...``,
others), which no SDK patch sees. ``init()`` adds one ``CustomLogger`` to ``litellm.callbacks``:

- ``log_pre_api_call`` (on the caller, before the request): who is billed, from the caller's
  ``consumer()`` scope, kept under litellm's ``litellm_call_id``; the call is marked as in progress
  in this context, so an SDK call the meter meters inside it (``openai/...`` goes through the
  ``openai`` SDK's ``client.post``) is noted;
- ``log_post_api_call`` (on the caller): the mark is cleared;
- ``log_success_event`` / ``async_log_success_event`` (litellm's worker, after the response or at
  the end of a stream): the response's ``usage`` is billed to whom the call was made for, unless
  the SDK layer metered it already (exactly once); a response without usage is counted missing;
- ``log_stream_event`` (litellm's worker, each chunk a sync stream hands out): its text is counted.

litellm reports nothing when a stream is dropped before its end (``CustomStreamWrapper.close()`` and
``__del__`` call no callback). So ``log_pre_api_call`` puts a small object in the ``kwargs`` it is
handed (the call's ``Logging.model_call_details``, which lives as long as litellm's ``Logging``
object and the stream holding it): once that is collected with the call still pending, the call is
billed from an estimate (what was sent and the text read), on the reporter thread, as an SDK stream
dropped unfinished is (an async stream's chunks reach no callback: its estimate has the input only).
A pending call evicted by the ``_MAX_PENDING`` bound is estimated the same way.

Never a dependency: this module imports litellm only when litellm is imported by the application.
The ``[litellm]`` extra excludes the compromised releases 1.82.7, 1.82.8 and 1.107.0. docs/frameworks.md.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any

from .._call import Reducer
from .._call import _unanswered as unanswered
from .._log import log_limited, log_once
from .._usage import Usage
from .._wrapping import Target, enter_outer, inner_noted, metered_inside
from ._base import Provider, read_field
from ._openai_usage import chat_usage

__all__ = ["PROVIDER"]

_KEY = "aerostack_meter"  # the key of the watched object in litellm's model_call_details
# litellm_call_id -> (meter, attribution, the text read, the weak reference to the watched object)
_pending: dict[str, tuple[Any, Any, _Read, weakref.ref[Any]]] = {}
_lock = threading.Lock()
_MAX_PENDING = 10_000
_logger: Any = None  # the one CustomLogger instance, made when litellm is imported


def _call_id(kwargs: Any) -> str | None:
    cid = kwargs.get("litellm_call_id") if isinstance(kwargs, dict) else None
    return cid if isinstance(cid, str) and cid else None


def response_usage(response: Any, model: Any) -> Usage | None:
    """litellm's ``ModelResponse`` / ``EmbeddingResponse`` / ``ResponsesAPIResponse`` usage, in the
    OpenAI shape litellm normalises every provider to (``prompt_tokens`` include cached tokens)."""
    u = read_field(response, "usage")
    if u is None:
        return None
    usage = chat_usage(u, model, read_field(response, "id"))
    if usage is None:  # the Responses API shape
        from ._openai_usage import responses_usage

        usage = responses_usage(u, model, read_field(response, "id"))
    return usage._replace(provider="litellm") if usage is not None else None


class _Alive:
    """Held only by a call's ``model_call_details``: collected with litellm's ``Logging`` object."""

    __slots__ = ("__weakref__",)


class _Read(Reducer):
    """The text a litellm stream handed out, for the estimate of a call whose end litellm never
    reported (never the request's ``kwargs``: holding them would keep the watched object alive)."""

    __slots__ = ()

    def observe(self, event: Any) -> bool:
        for choice in read_field(event, "choices") or ():
            text = read_field(read_field(choice, "delta"), "content")
            if isinstance(text, str):
                self.chars += len(text)
        return False

    def final(self, complete: bool) -> Usage | None:  # on the reporter thread
        log_once("litellm_unfinished", logging.WARNING,
                 "aerostack_meter: a litellm call ended without litellm reporting it (a stream dropped "
                 "before its end): billed from an estimate (counted in stats().events_estimated)")
        return super().final(complete)


def _watcher(cid: str) -> Callable[[weakref.ref[Any]], None]:
    def dropped(ref: weakref.ref[Any]) -> None:
        # A GC callback, run wherever a collection starts: it takes no lock (the thread may hold
        # one); dict reads and pops are atomic, and only one of this and _success pops the entry.
        try:
            entry = _pending.get(cid)
            if entry is None or entry[3] is not ref:
                return  # reported, or a later attempt under the same id
            if _pending.pop(cid, None) is not None and not inner_noted(cid):
                entry[0].record_unfinished(entry[2], entry[1], "litellm")
        except Exception:  # pragma: no cover - interpreter shutdown; never raise from a GC callback
            pass

    return dropped


def _pre(kwargs: Any) -> None:
    from .._global import get_meter

    cid = _call_id(kwargs)
    if cid is None:
        return
    meter = get_meter()
    if meter is None or meter.settings.disabled or not PROVIDER.patched:
        return
    attribution = meter.attribute(None, "litellm")
    enter_outer(cid)
    if attribution is not None:
        model = kwargs.get("model")
        text = kwargs.get("messages") or kwargs.get("input")
        read = _Read("litellm", {"model": model, "input": text} if isinstance(model, str) else {"input": text})
        alive = _Alive()
        entry = (meter, attribution, read, weakref.ref(alive, _watcher(cid)))
        old, evicted = None, None
        with _lock:
            if len(_pending) >= _MAX_PENDING:  # calls whose end litellm never reported: estimated
                old = next(iter(_pending))
                evicted = _pending.pop(old, None)
            _pending[cid] = entry
        kwargs[_KEY] = alive  # after the entry: a previous attempt's object, dropped here, is stale
        if old is not None and evicted is not None and not metered_inside(old):
            evicted[0].record_unfinished(evicted[2], evicted[1], "litellm")


def _ended(kwargs: Any) -> tuple[Any, Any, _Read, weakref.ref[Any]] | None:
    """litellm reports the call's end: its pending entry, taken (once), or ``None`` when there is
    nothing to bill (the SDK layer metered it, or nobody is billed: already counted)."""
    cid = _call_id(kwargs)
    if cid is None:
        return None
    with _lock:
        entry = _pending.pop(cid, None)
    return None if metered_inside(cid) else entry


def _success(kwargs: Any, response: Any) -> None:
    entry = _ended(kwargs)
    if entry is None:
        return
    meter, attribution = entry[0], entry[1]
    model = kwargs.get("model")
    usage = response_usage(response, model if isinstance(model, str) else None)
    if usage is None:
        meter.usage_missing("litellm", model if isinstance(model, str) else None)
    else:
        meter.record(usage, attribution)


def _stream_event(kwargs: Any, chunk: Any) -> None:
    cid = _call_id(kwargs)
    if cid is not None:
        with _lock:  # litellm's workers may log two chunks at once
            entry = _pending.get(cid)
            if entry is not None:
                entry[2].observe(chunk)


def _failure(kwargs: Any) -> None:
    """litellm reports a failed call (its callback gets the underlying exception): nothing to bill
    for an error the provider answered with or a request never sent. A stream cut mid-answer (a
    dropped connection, a timeout, litellm's ``MidStreamFallbackError``) is billed from an
    estimate (what was sent, and the text read so far), as an SDK stream that breaks is; another
    request that may have reached the provider unanswered is counted missing (``no_response``)."""
    entry = _ended(kwargs)
    if entry is None:
        return
    meter, attribution, read = entry[0], entry[1], entry[2]
    exc = kwargs.get("exception")
    cut = isinstance(exc, BaseException) and (type(exc).__name__ == "MidStreamFallbackError" or unanswered(exc))
    if kwargs.get("stream") is True and (read.chars or cut):
        meter.record_unfinished(read, attribution, "litellm")
    elif cut:
        meter.usage_missing("litellm", None, "no_response")


def _guard(fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except Exception:
        from .._global import get_meter

        meter = get_meter()
        if meter is not None:
            meter.counters.add("internal_errors")
        log_limited("litellm_callback", logging.ERROR, "aerostack_meter: internal error in the litellm "
                    "callback; that call goes on unmetered", exc_info=True)


def _make_logger() -> Any:
    from litellm.integrations.custom_logger import CustomLogger

    class AerostackMeterLogger(CustomLogger):  # type: ignore[misc, unused-ignore]  # Any without litellm
        """aerostack-meter's litellm callback (added to ``litellm.callbacks`` by ``init()``)."""

        def log_pre_api_call(self, model: Any, messages: Any, kwargs: Any) -> None:
            _guard(_pre, kwargs)

        def log_post_api_call(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
            enter_outer(None)

        def log_stream_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
            _guard(_stream_event, kwargs, response_obj)

        def log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
            _guard(_success, kwargs, response_obj)

        async def async_log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any,
                                          end_time: Any) -> None:
            _guard(_success, kwargs, response_obj)

        def log_failure_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
            _guard(_failure, kwargs)

        async def async_log_failure_event(self, kwargs: Any, response_obj: Any, start_time: Any,
                                          end_time: Any) -> None:
            _guard(_failure, kwargs)

    return AerostackMeterLogger()


def _targets() -> list[Target]:
    return []


class _CallbackProvider(Provider):
    """A provider whose patch adds a callback to the framework instead of patching methods."""

    def patch(self) -> int:
        global _logger
        n = super().patch()
        import litellm

        if _logger is None:
            _logger = _make_logger()
        if _logger not in litellm.callbacks:
            litellm.callbacks.append(_logger)
        return n

    def unpatch(self) -> None:
        super().unpatch()
        import sys

        litellm = sys.modules.get("litellm")
        if litellm is not None and _logger is not None:
            while _logger in litellm.callbacks:
                litellm.callbacks.remove(_logger)


PROVIDER = _CallbackProvider(
    name="litellm",
    package="litellm",
    versions=">=1.60,<2,!=1.82.7,!=1.82.8,!=1.107.0",
    targets=_targets,
    client_tree={},
)
