"""AWS Bedrock runtime (``boto3.client("bedrock-runtime")``): which calls are metered and where
their usage lives.

Metered: ``converse``, ``converse_stream``, ``invoke_model`` and
``invoke_model_with_response_stream``, on every ``bedrock-runtime`` client built once the meter is
on, whether by ``boto3.client(...)``, a ``boto3.Session`` or a botocore session. botocore builds a
client class per client and announces it with its ``creating-client-class.bedrock-runtime`` event;
a handler for that event (registered for every session botocore creates from then on, and on
boto3's default session if it exists) wraps the four methods in the class's attributes before the
class is made. A client built before ``init()`` (its class has none of those wrappers) is metered
at ``botocore.client.BaseClient._make_api_call``, which every client method calls: the four
operations of a ``bedrock-runtime`` client are metered there, every other call passes straight
through; a call already metered at its method (or by ``wrap(client)``) is not metered again (the
generic layer meters the outermost). aiobotocore clients built before ``init()`` (their
``_make_api_call`` is their own) are metered through ``wrap(client)``. Anthropic's own
``AnthropicBedrock`` client does not go through
these clients (it signs with botocore and sends with httpx): it stays metered by the ``anthropic``
provider, once.

Usage (:mod:`._bedrock_usage`): ``converse`` ``usage``; ``converse_stream`` its final ``metadata``
event; ``invoke_model`` the count headers (the body is never read); the response stream's last
chunk ``amazon-bedrock-invocationMetrics``. The model is the request's ``modelId``. A stream left
early is estimated once.
"""

from __future__ import annotations

import contextvars
import json
import sys
from collections.abc import Callable, Mapping
from typing import Any

from .. import _global
from .._call import Endpoint, Kind, Reducer
from .._estimate import estimate_input_tokens
from .._usage import Usage
from ._base import Provider, ReaderReducer, Target, metered_method
from ._bedrock_usage import (
    chunk_reading,
    chunk_text_chars,
    chunk_usage,
    converse_event_chars,
    converse_event_usage,
    converse_usage,
    header_usage,
    quick_chunk_chars,
)

__all__ = ["PROVIDER"]

# The request's modelId, from prepare_call() to usage() of the same call, in the calling context (a
# thread, or an asyncio task: each runs in its own copy of the context); no other call's prepare
# runs in between in that context: a call made inside a metered one is not metered.
_MODEL: contextvars.ContextVar[Any] = contextvars.ContextVar("aerostack_bedrock_model", default=None)
_set_model = _MODEL.set
_get_model = _MODEL.get


def _remember_model(meter: Any, instance: Any, kwargs: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """A response operation's ``prepare_call``: keeps the request's ``modelId`` for ``usage()``
    (checked when read). Set, never reset: the value is one object per context (thread or task),
    overwritten by the next call's, and read only after its own call set it."""
    _set_model(kwargs.get("modelId"))
    return kwargs, None


def _no_usage(response: Any) -> None:
    return None


def _model_name(model: Any) -> str | None:
    return model if isinstance(model, str) and model else None  # usage() has it inline


def _model_id(kwargs: Mapping[str, Any]) -> str | None:
    return _model_name(kwargs.get("modelId"))


Quick = Callable[[dict[str, Any]], "int | None"]


def _converse_quick(event: dict[str, Any]) -> int | None:
    """The characters of a ``converse_stream`` event that carries no usage (all but ``metadata``)."""
    return None if "metadata" in event else converse_event_chars(event)


Whole = Callable[[Any, "str | None"], "tuple[Usage | None, int]"]


class _BedrockReducer(ReaderReducer):
    """A Bedrock event stream; estimates read ``invoke_model``'s JSON ``body`` for the input.
    ``quick`` reads the common event (a dict that carries no usage) in one call; ``whole`` (where
    the endpoint has one) reads any other dict's usage and characters together; anything else goes
    through the endpoint's readers."""

    __slots__ = ("_quick", "_whole")

    def __init__(self, provider: str, kwargs: Mapping[str, Any], usage_of: Callable[[Any], Usage | None],
                 chars_of: Callable[[Any], int] | None, quick: Quick | None,
                 whole: Whole | None = None) -> None:
        super().__init__(provider, kwargs, usage_of, chars_of)
        self._quick = quick
        self._whole = whole

    def observe(self, event: Any) -> bool:
        quick = self._quick
        if quick is not None and event.__class__ is dict:
            chars = quick(event)
            if chars is not None:
                self.chars += chars
                return False
            if self._whole is not None:
                usage, chars = self._whole(event, self.model)
                self.chars += chars
                if usage is not None:
                    self.exact = usage  # the last value wins, as in ReaderReducer
                return False
        return ReaderReducer.observe(self, event)

    def estimate(self) -> Usage:
        usage = super().estimate()
        body = self.kwargs.get("body")
        if "messages" in self.kwargs or not isinstance(body, (str, bytes, bytearray)):
            return usage
        try:
            request = json.loads(body)
        except ValueError:
            return usage
        if not isinstance(request, dict):
            return usage
        inp = estimate_input_tokens(request)
        return usage._replace(input_tokens=inp, total_tokens=inp + usage.output_tokens)


class BedrockCall(Endpoint):
    """One Bedrock runtime operation; ``slot`` names the key of a streamed response's events."""

    provider = "bedrock"

    def __init__(self, name: str, kind: Kind, *,
                 response: Callable[[Any, str | None], Usage | None] | None = None,
                 event: Callable[[Any, str | None], Usage | None] | None = None,
                 event_chars: Callable[[Any], int] | None = None, slot: str = "",
                 quick: Quick | None = None, whole: Whole | None = None) -> None:
        self.name = name
        self.returns: Kind = kind
        self._response = response
        self._event = event
        self._event_chars = event_chars
        self._slot = slot
        self._quick = quick
        self._whole = whole

        if response is not None:  # the request's modelId, for usage(): a stream's reducer has the kwargs
            self.prepare_call = _remember_model  # type: ignore[method-assign]
        else:  # nothing to prepare: the core does not call it (Endpoint's no-op)
            self.usage = _no_usage  # type: ignore[method-assign]

    def kind(self, result: Any) -> Kind:
        return self.returns

    def usage(self, response: Any) -> Usage | None:
        model = _get_model()
        return self._response(response, model if isinstance(model, str) and model else None)  # type: ignore[misc]

    def reducer(self, kwargs: Mapping[str, Any], hint: Any) -> Reducer:
        model = _model_id(kwargs)
        read = self._event
        assert read is not None
        reducer = _BedrockReducer(self.provider, kwargs, lambda event: read(event, model),
                                  self._event_chars, self._quick, self._whole)
        reducer.model = model
        return reducer

    def stream_in(self, result: Any) -> Any:
        return result[self._slot]

    def with_stream(self, result: Any, stream: Any) -> Any:
        result[self._slot] = stream
        return result


CONVERSE = BedrockCall("converse", "response", response=converse_usage)
INVOKE = BedrockCall("invoke_model", "response", response=header_usage)
CONVERSE_STREAM = BedrockCall("converse_stream", "stream", event=converse_event_usage,
                              event_chars=converse_event_chars, slot="stream", quick=_converse_quick)
INVOKE_STREAM = BedrockCall("invoke_model_with_response_stream", "stream", event=chunk_usage,
                            event_chars=chunk_text_chars, slot="body", quick=quick_chunk_chars,
                            whole=chunk_reading)
_CALLS = (CONVERSE, CONVERSE_STREAM, INVOKE, INVOKE_STREAM)

_EVENT = "creating-client-class.bedrock-runtime"
_UNIQUE_ID = "aerostack_meter.bedrock"


_on = False  # PROVIDER.patched, as one global read per call (set in patch(), cleared in unpatch())


def _getter() -> Any:
    """The meter of a client method wrapped in a class: the process-wide one while the provider is
    patched (read as the module's global, not by a call of ``get_meter``: one frame fewer per call;
    an import statement here once cost ~13 k instructions)."""
    return _global._meter if _on else None


def _on_client_class(class_attributes: dict[str, Any], **_: Any) -> None:
    """botocore's ``creating-client-class`` handler: wrap the four methods of the class (plain
    functions in the class botocore builds: :func:`metered_method`)."""
    from .._wrapping import is_async_callable, is_ours, make_wrapper

    for call in _CALLS:
        method = class_attributes.get(call.name)
        if method is None or is_ours(method):
            continue
        is_async = is_async_callable(method)  # a botocore-based async SDK builds the class
        class_attributes[call.name] = metered_method(
            method, make_wrapper(call, is_async, _getter, returns=call.returns), is_async)


class _ClientClassProvider(Provider):
    """A provider whose patch registers a botocore event handler instead of patch targets."""

    def patch(self) -> int:
        global _on
        n = super().patch()
        _on = True
        from botocore import handlers

        if (_EVENT, _on_client_class) not in handlers.BUILTIN_HANDLERS:
            handlers.BUILTIN_HANDLERS.append((_EVENT, _on_client_class))  # every new session
        boto3 = sys.modules.get("boto3")
        session = getattr(boto3, "DEFAULT_SESSION", None)
        if session is not None:  # boto3's default session exists already
            session.events.register(_EVENT, _on_client_class, unique_id=_UNIQUE_ID)
        return n

    def unpatch(self) -> None:
        global _on
        _on = False
        super().unpatch()  # the wrapped methods of classes already built go inert (_getter)
        handlers = sys.modules.get("botocore.handlers")
        if handlers is not None and (_EVENT, _on_client_class) in handlers.BUILTIN_HANDLERS:
            handlers.BUILTIN_HANDLERS.remove((_EVENT, _on_client_class))
        session = getattr(sys.modules.get("boto3"), "DEFAULT_SESSION", None)
        if session is not None:
            session.events.unregister(_EVENT, _on_client_class, unique_id=_UNIQUE_ID)


_OPERATIONS = {"Converse": CONVERSE, "ConverseStream": CONVERSE_STREAM, "InvokeModel": INVOKE,
               "InvokeModelWithResponseStream": INVOKE_STREAM}


def _is_runtime(client: Any) -> bool:
    model = getattr(getattr(client, "meta", None), "service_model", None)
    return getattr(model, "service_name", None) == "bedrock-runtime"


def _api_call_hook(get_meter: Any, original: Callable[..., Any]) -> Callable[..., Any]:
    """``BaseClient._make_api_call(operation_name, api_params)``, as a plain function in its place
    (every botocore call of every service passes through it): the four operations of a
    ``bedrock-runtime`` client, metered with ``api_params`` as the call's keyword arguments. It
    takes botocore's own two parameters (no ``*args``/``**kwargs`` to pack and unpack on every
    call: ~2 k instructions); a botocore whose method takes others gets the general form."""
    from .._wrapping import ACTIVE, make_wrapper

    meters = {op: make_wrapper(call, False, get_meter, returns=call.returns) for op, call in _OPERATIONS.items()}
    active = ACTIVE.get

    def meter_call(self: Any, operation: Any, params: Any) -> Any:
        meter = meters.get(operation) if type(operation) is str else None
        if meter is None or not isinstance(params, Mapping) or not _is_runtime(self):
            return original(self, operation, params)
        return meter(lambda **kw: original(self, operation, kw), self, (), dict(params))

    def _make_api_call(self: Any, operation_name: Any, api_params: Any) -> Any:
        if active():  # metered already, at the client's method or by wrap(): the common case
            return original(self, operation_name, api_params)
        return meter_call(self, operation_name, api_params)

    def _make_api_call_general(self: Any, *args: Any, **kwargs: Any) -> Any:
        if active() or len(args) != 2 or kwargs:
            return original(self, *args, **kwargs)
        return meter_call(self, args[0], args[1])

    return _make_api_call if _two_parameters(original) else _make_api_call_general


def _two_parameters(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` is ``(self, operation_name, api_params)``, as botocore has it."""
    import inspect

    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    return ([p.name for p in params] == ["self", "operation_name", "api_params"]
            and all(p.kind is p.POSITIONAL_OR_KEYWORD and p.default is p.empty for p in params))


def _targets() -> list[Target]:
    return [Target("botocore.client", "BaseClient._make_api_call", None, is_async=False, plain=_api_call_hook)]


PROVIDER = _ClientClassProvider(
    name="bedrock",
    package="botocore",
    distribution="botocore",
    versions=">=1.37,<2",
    targets=_targets,
    client_tree={call.name: call for call in _CALLS},
)
