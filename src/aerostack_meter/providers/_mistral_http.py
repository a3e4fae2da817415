"""Mistral calls that escaped their method's meter, metered at ``BaseSDK.do_request``.

``init()`` meters ``Chat.complete`` & co. by replacing them in their classes. A method bound
before that (``complete = client.chat.complete``, kept by a framework or an app's set-up code)
still holds the SDK's own function, and so does nothing else: every one of those calls sends
through ``self.do_request`` / ``self.do_request_async`` (``BaseSDK``, looked up at call time). The
replacement there lets a call metered at its method straight through (the re-entrancy flag is
set: one flag read) and meters any other call of a metered operation (keyed by the SDK's
``operation_id``) from what passes there: the request's JSON body stands for the method's
arguments (``model``, ``messages``, ``prompt``: estimates), a response's usage is read from its
JSON body, a stream's from its server-sent events as the SDK reads their bytes (the response's
byte stream is observed in place; the SDK's ``EventStream`` and what the caller gets are
unchanged). Every other call (embeddings, OCR, ...) passes through.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from .._call import Endpoint, Kind, Reducer
from .._usage import Usage
from ._base import ReaderReducer
from ._mistral_usage import chunk_chars, chunk_usage, response_usage

__all__ = ["request_hook"]

_BOUNDARY = b"\n\n"


class _EventBytes(ReaderReducer):
    """A stream's server-sent events, from the bytes the SDK reads: each complete event's JSON
    ``data`` is read by the stream readers (the usage on the last chunk, characters for an
    estimate); a partial event waits for its next bytes."""

    __slots__ = ("_buffer",)

    def __init__(self, provider: str, kwargs: Mapping[str, Any]) -> None:
        super().__init__(provider, kwargs, chunk_usage, chunk_chars)
        self._buffer = b""

    def observe(self, event: Any) -> bool:
        if not isinstance(event, (bytes, bytearray)):
            return False
        data = (self._buffer + event).replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        *blocks, self._buffer = data.split(_BOUNDARY)
        for block in blocks:
            lines = [line[5:].lstrip(b" ") for line in block.split(b"\n") if line.startswith(b"data:")]
            if not lines or lines == [b"[DONE]"]:
                continue
            try:
                chunk = json.loads(b"\n".join(lines))
            except ValueError:
                continue
            if isinstance(chunk, dict):
                ReaderReducer.observe(self, chunk)
        return False


class HttpCall(Endpoint):
    """One Mistral operation seen at ``do_request``: its response is the HTTP response."""

    provider = "mistral"

    def __init__(self, name: str, returns: Kind) -> None:
        self.name = name
        self.returns: Kind = returns

    def kind(self, result: Any) -> Kind:
        return self.returns

    def usage(self, response: Any) -> Usage | None:
        try:
            body = response.json()
        except ValueError:  # not JSON: no usage to read (counted missing)
            return None
        return response_usage(body) if isinstance(body, dict) else None

    def reducer(self, kwargs: Mapping[str, Any], hint: Any) -> Reducer:
        return _EventBytes(self.provider, kwargs)

    def stream_in(self, result: Any) -> Any:
        return result.stream  # the response's byte stream (the SDK reads it through the response)

    def with_stream(self, result: Any, stream: Any) -> Any:
        result.stream = stream
        return result


# operation_id (the same in every supported SDK version) -> endpoint
OPERATIONS: dict[str, HttpCall] = {}
for _resource, _complete, _stream in (
        ("chat", "chat_completion_v1_chat_completions_post", "stream_chat"),
        ("fim", "fim_completion_v1_fim_completions_post", "stream_fim"),
        ("agents", "agents_completion_v1_agents_completions_post", "stream_agents")):
    OPERATIONS[_complete] = HttpCall(f"{_resource}.complete", "response")
    OPERATIONS[_stream] = HttpCall(f"{_resource}.stream", "stream")


def _body(request: Any) -> dict[str, Any]:
    """The request's JSON body (what the method's arguments became): the call's keyword
    arguments for attribution, budgets and estimates (``{}`` if unreadable)."""
    try:
        body = json.loads(request.content)
    except (AttributeError, TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


_PARAMS = ["self", "hook_ctx", "request", "is_error_status_code", "stream", "retry_config"]


def request_hook(is_async: bool) -> Callable[[Any, Callable[..., Any]], Callable[..., Any]]:
    """The ``Target.plain`` factory for ``BaseSDK.do_request`` (``is_async``: ``do_request_async``,
    replaced by a plain function returning the SDK's coroutine, or ours for a call to meter)."""

    def factory(get_meter: Any, original: Callable[..., Any]) -> Callable[..., Any]:
        from .._wrapping import ACTIVE, make_wrapper

        meters = {op: make_wrapper(call, is_async, get_meter, returns=call.returns)
                  for op, call in OPERATIONS.items()}
        active = ACTIVE.get

        def meter_call(self: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            hook_ctx = args[0] if args else kwargs.get("hook_ctx")
            meter = meters.get(getattr(hook_ctx, "operation_id", None))  # type: ignore[arg-type]
            if meter is None:
                return original(self, *args, **kwargs)
            request = args[1] if len(args) > 1 else kwargs.get("request")
            return meter(lambda **_: original(self, *args, **kwargs), self, (), _body(request))

        def do_request(self: Any, hook_ctx: Any, request: Any, is_error_status_code: Any,
                       stream: Any = False, retry_config: Any = None) -> Any:
            if active():  # metered at the method (or by wrap()) already: the common case
                return original(self, hook_ctx, request, is_error_status_code, stream, retry_config)
            return meter_call(self, (hook_ctx, request, is_error_status_code, stream, retry_config), {})

        def do_request_general(self: Any, *args: Any, **kwargs: Any) -> Any:
            if active():
                return original(self, *args, **kwargs)
            return meter_call(self, args, kwargs)

        return do_request if _parameters(original) == _PARAMS else do_request_general

    return factory


def _parameters(fn: Callable[..., Any]) -> list[str]:
    """``fn``'s parameter names, if all are plain positional-or-keyword ones (else ``[]``)."""
    import inspect

    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return []
    if any(p.kind is not p.POSITIONAL_OR_KEYWORD for p in params):
        return []
    defaults = [p.default for p in params if p.default is not p.empty]
    if defaults != [False, None]:  # the fast form's own defaults (stream, retry_config)
        return []
    return [p.name for p in params]
