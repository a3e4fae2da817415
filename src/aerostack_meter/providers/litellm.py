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
  the SDK layer metered it already (exactly once); a response without usage is counted missing.

Never a dependency: this module imports litellm only when litellm is imported by the application.
The ``[litellm]`` extra excludes the compromised releases 1.82.7, 1.82.8 and 1.107.0. docs/frameworks.md.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from .._log import log_limited
from .._usage import Usage
from .._wrapping import Target, enter_outer, metered_inside
from ._base import Provider, read_field
from ._openai_usage import chat_usage

__all__ = ["PROVIDER"]

_pending: dict[str, tuple[Any, Any]] = {}  # litellm_call_id -> (meter, attribution)
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
        with _lock:
            if len(_pending) >= _MAX_PENDING:  # calls whose end litellm never reported
                _pending.pop(next(iter(_pending)))
            _pending[cid] = (meter, attribution)


def _success(kwargs: Any, response: Any) -> None:
    cid = _call_id(kwargs)
    if cid is None:
        return
    with _lock:
        entry = _pending.pop(cid, None)
    if metered_inside(cid) or entry is None:
        return  # the SDK layer metered it (or nobody is billed: already counted)
    meter, attribution = entry
    model = kwargs.get("model")
    usage = response_usage(response, model if isinstance(model, str) else None)
    if usage is None:
        meter.usage_missing("litellm", model if isinstance(model, str) else None)
    else:
        meter.record(usage, attribution)


def _failure(kwargs: Any) -> None:
    cid = _call_id(kwargs)
    if cid is not None:
        with _lock:
            _pending.pop(cid, None)
        metered_inside(cid)


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
