"""The OpenAI surfaces as endpoints: argument preparation, result kinds, stream reducers.

Three families: chat-shaped (chat completions, legacy completions, embeddings: ``usage`` is a
``CompletionUsage``; streams need ``stream_options.include_usage``), responses (usage in the
response, or in the terminal ``response.completed``/``incomplete``/``failed`` event), and the
close hooks of the SDK's stream helpers.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .._call import Endpoint, Kind, Reducer
from .._log import log_limited
from .._streams import AsyncStreamProxy, StreamProxy
from .._usage import Usage
from ._openai_usage import (
    CHAT_FIELDS,
    RESPONSES_FIELDS,
    chat_usage,
    get,
    response_usage,
    responses_usage,
)

if TYPE_CHECKING:
    from .._meter import Meter

__all__ = [
    "ChatEndpoint",
    "CompletionsEndpoint",
    "EmbeddingsEndpoint",
    "ResponsesEndpoint",
    "async_close_hook",
    "sync_close_hook",
]


class _SDK:
    """The SDK classes the endpoints test results against, resolved on first use (importing this
    module never imports ``openai``: the registry imports every provider module)."""

    model: type
    streams: tuple[type, ...]
    unread: tuple[type, ...]
    fields_set: str


_sdk: _SDK | None = None
# pydantic 2 (set with _sdk): a chunk's fields set is read by its literal name, a LOAD_ATTR (~415
# instructions on a pydantic model), not by getattr() of a name held in a slot (~560)
_pydantic2 = False


def sdk() -> _SDK:
    global _sdk, _pydantic2
    if _sdk is None:
        import openai
        from pydantic import VERSION

        t = _SDK()
        t.model = openai.BaseModel
        t.streams = (openai.Stream, openai.AsyncStream)
        # with_streaming_response: the body is not read yet, parse() would read it (and is async on
        # AsyncAPIResponse)
        t.unread = tuple(c for c in (getattr(openai, "APIResponse", None),
                                     getattr(openai, "AsyncAPIResponse", None)) if c)
        # The model's own set of fields given (what to_dict()/exclude_unset dump): pydantic 2 / 1
        _pydantic2 = VERSION.startswith("2.")
        t.fields_set = "__pydantic_fields_set__" if _pydantic2 else "__fields_set__"
        _sdk = t
    return _sdk


def _bad_event(where: str) -> None:
    log_limited("openai_" + where, logging.ERROR, "aerostack_meter: could not read an OpenAI stream "
                "event; this stream's usage will be estimated", exc_info=True)


_KINDS: dict[type, Kind] = {}  # the SDK's model and stream classes: their kind, once per class
_REYIELDS: dict[type, bool] = {}  # stream classes whose iteration only re-yields ``_iterator``


def _reyields(cls: type) -> bool:
    """Whether ``cls`` (a ``Stream``/``AsyncStream``) iterates as its ``_iterator`` does: its
    ``__iter__``/``__aiter__`` and ``__next__``/``__anext__`` read nothing but ``_iterator``
    (``for item in self._iterator: yield item``, ``return self._iterator.__next__()``). An SDK
    whose stream does more per event (a subclass, an observer hook) is iterated as it is."""
    ok = _REYIELDS.get(cls)
    if ok is None:
        ok = True
        for names in (("__iter__", "__next__"), ("__aiter__", "__anext__")):
            fns = [getattr(cls, n, None) for n in names]
            if fns[0] is None and fns[1] is None:
                continue
            for fn in fns:
                code = getattr(fn, "__code__", None)
                if (code is None or "_iterator" not in code.co_names
                        or set(code.co_names) - {"_iterator", "__next__", "__anext__"}):
                    ok = False
        _REYIELDS[cls] = ok
    return ok


class OpenAIEndpoint(Endpoint):
    provider = "openai"
    # usage of a complete response: a function of the response alone (no bound-method frame)
    usage: Callable[[Any], Usage | None] = staticmethod(  # type: ignore[assignment]
        functools.partial(response_usage, CHAT_FIELDS))

    def __init__(self, name: str) -> None:
        self.name = name

    def kind(self, result: Any) -> Kind:
        kind = _KINDS.get(type(result))
        if kind is not None:
            return kind
        t = _sdk or sdk()
        if isinstance(result, t.model):
            kind = "response"
        elif isinstance(result, t.streams):
            kind = "stream"
        elif hasattr(result, "http_response") and hasattr(result, "parse"):
            return "raw"  # .with_raw_response (LegacyAPIResponse) / .with_streaming_response (APIResponse)
        else:
            return "response"
        _KINDS[type(result)] = kind
        return kind

    def events(self, stream: Any) -> Any:
        # The SDK's Stream re-yields its ``_iterator`` (a generator made in __init__): the meter
        # iterates that, one generator layer less per chunk than the user's loop over the stream.
        if isinstance(stream, (_sdk or sdk()).streams) and _reyields(type(stream)):
            events = stream.__dict__.get("_iterator")
            if events is not None:
                return events
        return stream

    def parse_raw(self, raw: Any) -> Any:
        """A ``.with_raw_response`` result of a non-streaming call has its body read already: its
        (cached) ``parse()`` consumes nothing, and the user's later ``parse()`` returns the same
        object. Anything else is metered when the user parses it."""
        if isinstance(raw, (_sdk or sdk()).unread):
            return None
        try:
            parsed = raw.parse()
        except Exception:
            # e.g. a structured-output parse that fails on a truncated reply: the call consumed
            # tokens all the same, and the body's usage is there.
            try:
                return raw.http_response.json()
            except Exception:
                return None
        return parsed if self.kind(parsed) == "response" else None


# -- chat-shaped: chat completions, legacy completions, embeddings ---------------------------------

class _ChatHint:
    __slots__ = ("estimate", "expect", "hide")

    def __init__(self, hide: bool, expect: bool, estimate: bool = False) -> None:
        self.hide = hide  # we added include_usage: hide the usage-only chunk, drop "usage" from fields set
        self.expect = expect  # usage is expected at the end of the stream
        self.estimate = estimate  # no usage will come (the meter did not ask): estimate even a complete stream


_ABSENT = object()  # not passed at all; `omit` / `NOT_GIVEN` are falsy and mean the same
_NO_USAGE = _ChatHint(False, False)
_USER_USAGE = _ChatHint(False, True)
_INJECTED = _ChatHint(True, True)
_ESTIMATE = _ChatHint(False, True, True)  # sent without include_usage by the meter's choice: estimate


# Destinations (base URLs) that refused an injected ``stream_options`` (Azure API versions before
# 2024-09-01 answer 400 "Unrecognized request argument supplied: stream_options"): never again.
_rejected: set[str] = set()


# A client's base URL as text, by the ``httpx.URL`` object it is (kept, so its id stays its own):
# built once per client URL, not per stream (``str()`` of a URL is ~30 k instructions).
_base_text: dict[int, tuple[Any, str]] = {}
_BASE_TEXT_MAX = 256


def base_url(instance: Any) -> str:
    """The base URL of a client (the HTTP layer's ``instance``) or of a resource's client (no public
    seam from a resource to its client: ``SyncAPIResource._client``), without its trailing ``/``."""
    client = instance if hasattr(instance, "base_url") else instance._client
    url = client.base_url
    known = _base_text.get(id(url))
    if known is not None and known[0] is url:
        return known[1]
    text = str(url).rstrip("/")
    if len(_base_text) >= _BASE_TEXT_MAX:
        _base_text.clear()
    _base_text[id(url)] = (url, text)
    return text


def _refused(instance: Any) -> bool:
    if not _rejected:
        return False
    try:
        return base_url(instance) in _rejected
    except Exception:
        return False


def refused_stream_options(exc: BaseException) -> bool:
    """A 400 naming ``stream_options``: the server does not know the option we added."""
    status = getattr(exc, "status_code", None)
    if status != 400:
        return False
    text = str(getattr(exc, "message", "")) + " " + str(getattr(exc, "body", ""))
    return "stream_options" in text


def stream_usage_allowed(meter: Meter, instance: Any) -> bool:
    """The ``stream_usage`` setting for this client's base URL: bool, callable or mapping."""
    setting = meter.settings.stream_usage
    if setting is False:
        return False
    if setting is True and not _rejected:
        return True  # nothing refused the option yet: no base URL to look up
    try:
        base = base_url(instance)
        if base in _rejected:
            return False
        if setting is True:
            return True
        if callable(setting):
            return bool(setting(base))
        if isinstance(setting, Mapping):
            for key, value in setting.items():
                if isinstance(key, str) and key.rstrip("/") == base:
                    return bool(value)
        return True
    except Exception:
        log_limited("stream_usage", logging.ERROR, "aerostack_meter: the stream_usage setting could not "
                    "be evaluated; stream_options are left as the caller passed them", exc_info=True)
        return False


class ChatEndpoint(OpenAIEndpoint):
    """Chat completions (create, parse, the stream helper's create)."""

    def prepare_call(self, meter: Meter, instance: Any, kwargs: dict[str, Any]) -> tuple[dict[str, Any], Any]:
        if kwargs.get("stream") is not True:
            return kwargs, None
        so = kwargs.get("stream_options", _ABSENT)
        if isinstance(so, Mapping):
            if "include_usage" in so:  # the caller decided: pass everything through untouched
                return kwargs, _USER_USAGE if so["include_usage"] else _NO_USAGE
        elif so is not _ABSENT and (so is None or so):
            return kwargs, _NO_USAGE  # an explicit None (sent as null), or something we don't know
        if not stream_usage_allowed(meter, instance):
            # a destination that refused the option earlier: estimated, as the first refused call was
            return kwargs, _ESTIMATE if _refused(instance) else _NO_USAGE
        new = dict(kwargs)
        new["stream_options"] = {**(so if isinstance(so, Mapping) else {}), "include_usage": True}
        return new, _INJECTED

    def passthrough(self, kwargs: Mapping[str, Any]) -> Any:
        """Sent as written: usage comes if the caller asked for it; otherwise the stream is
        estimated from what passes through (the meter chose not to ask)."""
        if kwargs.get("stream") is not True:
            return None
        so = kwargs.get("stream_options")
        if isinstance(so, Mapping) and "include_usage" in so:
            return _USER_USAGE if so["include_usage"] else _NO_USAGE
        return _ESTIMATE

    def rejected(self, meter: Meter, instance: Any, exc: BaseException, hint: Any) -> Any:
        if hint is not _INJECTED or not refused_stream_options(exc):
            return None
        base = base_url(instance)
        _rejected.add(base)
        log_limited("stream_options_rejected:" + base, logging.WARNING,
                    "aerostack_meter: %s refused stream_options.include_usage; its streamed calls are "
                    "sent without it and billed from an estimate", base)
        return _ESTIMATE

    def reducer(self, kwargs: Mapping[str, Any], hint: Any) -> Reducer:
        return ChatReducer(self.provider, kwargs, hint if isinstance(hint, _ChatHint) else _NO_USAGE)


class ChatReducer(Reducer):
    __slots__ = ("estimate_always", "expect", "fields_set", "hide", "seen")

    def __init__(self, provider: str, kwargs: Mapping[str, Any], hint: _ChatHint) -> None:
        Reducer.__init__(self, provider, kwargs)  # not super(): this runs before every first chunk
        self.fields_set = (_sdk or sdk()).fields_set
        self.hide = hint.hide
        self.expect = hint.expect
        self.estimate_always = hint.estimate
        self.seen = False  # a chunk with choices went by

    def observe(self, chunk: Any) -> bool:
        # The per-chunk path: plain attribute reads only (see benchmarks/bench_openai_overhead.py).
        try:
            choices = chunk.choices
            u = chunk.usage
            if u is not None:  # the usage chunk; some servers put usage on every chunk: the last wins
                self._usage(chunk, u)
            if choices:
                if self.hide:  # as if include_usage had not been sent: no "usage": null in to_dict()
                    if _pydantic2:
                        chunk.__pydantic_fields_set__.discard("usage")
                    else:
                        getattr(chunk, self.fields_set).discard("usage")
                    self.seen = True
                delta = choices[0].delta
                if delta is not None:
                    text = delta.content
                    if text.__class__ is str:
                        self.chars += len(text)
                    elif text is None and delta.tool_calls:
                        self._tool_args(delta.tool_calls)
                return False
            return self.hide and (u is not None or self.seen)
        except Exception:
            _bad_event("chat_chunk")
            return False

    def _usage(self, chunk: Any, u: Any) -> None:
        usage = chat_usage(u, getattr(chunk, "model", None) or self.model, getattr(chunk, "id", None),
                           get(chunk, "service_tier"))
        if usage is not None:
            self.exact = usage  # cumulative: the last one wins

    def _tool_args(self, tool_calls: Any) -> None:
        for tc in tool_calls:
            args = getattr(getattr(tc, "function", None), "arguments", None)
            if type(args) is str:
                self.chars += len(args)

    def estimate_when_complete(self) -> bool:
        return self.estimate_always

    def final(self, complete: bool) -> Usage | None:
        if self.exact is None and not self.expect:
            return None  # the caller turned stream usage off (or the base URL has it off): "usage missing"
        return super().final(complete)


class CompletionsEndpoint(ChatEndpoint):
    """Legacy ``completions.create``: the same usage and ``include_usage`` rules as chat."""

    def reducer(self, kwargs: Mapping[str, Any], hint: Any) -> Reducer:
        return CompletionReducer(self.provider, kwargs, hint if isinstance(hint, _ChatHint) else _NO_USAGE)


class CompletionReducer(ChatReducer):
    __slots__ = ()

    def observe(self, chunk: Any) -> bool:
        try:
            choices = chunk.choices
            u = chunk.usage
            if u is not None:
                self._usage(chunk, u)
            if choices:
                if self.hide:
                    if _pydantic2:
                        chunk.__pydantic_fields_set__.discard("usage")
                    else:
                        getattr(chunk, self.fields_set).discard("usage")
                    self.seen = True
                text = choices[0].text
                if text.__class__ is str:
                    self.chars += len(text)
                return False
            return self.hide and (u is not None or self.seen)
        except Exception:
            _bad_event("completion_chunk")
            return False


class EmbeddingsEndpoint(OpenAIEndpoint):
    """``embeddings.create``: input tokens only."""

    produces_output = False


# -- responses ------------------------------------------------------------------------------

_TERMINAL = frozenset({"response.completed", "response.incomplete", "response.failed"})


class ResponsesEndpoint(OpenAIEndpoint):
    """Responses API (create, parse, the stream helper's create). Nothing to inject."""

    usage = staticmethod(functools.partial(response_usage, RESPONSES_FIELDS))

    def reducer(self, kwargs: Mapping[str, Any], hint: Any) -> Reducer:
        return ResponsesReducer(self.provider, kwargs)


class ResponsesReducer(Reducer):
    __slots__ = ()

    def observe(self, event: Any) -> bool:
        try:
            t = event.type
            if t.endswith(".delta"):
                if "audio" not in t:  # audio deltas are base64 bytes, not text
                    d = event.delta
                    if type(d) is str:
                        self.chars += len(d)
            elif t in _TERMINAL:
                r = event.response
                usage = responses_usage(get(r, "usage"), get(r, "model") or self.model, get(r, "id"),
                                        get(r, "service_tier"))
                if usage is not None:
                    self.exact = usage
            elif t == "response.created":
                r = event.response
                rid, model = get(r, "id"), get(r, "model")
                if isinstance(rid, str):
                    self.response_id = rid
                if isinstance(model, str) and model:
                    self.model = model
        except Exception:
            _bad_event("responses_event")
        return False


# -- the stream helpers' close() -------------------------------------------------------------------
# ChatCompletionStream / ResponseStream (and the async twins) close the HTTP response directly
# (``self._response.close()``), never their raw stream: without these hooks an early close through
# the helper would only be metered when the garbage collector finds our proxy. The raw stream is the
# helper's ``_raw_stream`` (no public accessor; named in tests/providers/test_openai_internals.py).

def sync_close_hook(get_meter: Callable[[], Any]) -> Callable[..., Any]:
    def close(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        raw = getattr(instance, "_raw_stream", None)
        if isinstance(raw, StreamProxy):
            try:
                raw.close()
            except Exception:
                log_limited("close_hook", logging.DEBUG, "closing the raw stream failed", exc_info=True)
        return wrapped(*args, **kwargs)

    return close


def async_close_hook(get_meter: Callable[[], Any]) -> Callable[..., Any]:
    async def close(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        raw = getattr(instance, "_raw_stream", None)
        if isinstance(raw, AsyncStreamProxy):
            try:
                await raw.close()
            except Exception:
                log_limited("close_hook", logging.DEBUG, "closing the raw stream failed", exc_info=True)
        return await wrapped(*args, **kwargs)

    return close
