"""Anthropic, declared: where usage lives, the endpoint path metered at the base client, and
the ``wrap()`` tree.

Every call of every client (``Anthropic``, Bedrock, Vertex, Foundry, their async twins) passes
through the base client with the path ``/v1/messages`` (``?beta=true`` for beta), before Bedrock
and Vertex rewrite it: ``create``, ``parse``, the ``stream()`` helper, tool runners, raw variants.
``count_tokens`` and message batches are never metered.

Streams: ``message_start`` carries the input and cache counts, ``message_delta`` cumulative
totals (the last value wins; never added up); the ``stream()`` helper reads the raw stream the
layer proxies, so its own object is untouched.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from .._call import Endpoint, Kind, Reducer
from .._usage import Usage
from .._wrap import CLIENT, HELPER
from .._wrapping import Target
from ._anthropic_usage import DELTA_REQUIRED, Counts, build_usage, message_usage, read_counts
from ._base import Provider
from ._stainless import REQUEST_METHODS, BaseClient

__all__ = ["PROVIDER"]

_TEXT_FIELDS = {"text_delta": "text", "thinking_delta": "thinking", "input_json_delta": "partial_json"}


_KINDS: dict[type, Kind] = {}


class MessageReducer(Reducer):
    """Folds raw ``messages`` stream events (``create(stream=True)``) into usage."""

    __slots__ = ("counts", "deltas", "invalid")

    def __init__(self, provider: str, kwargs: Mapping[str, Any]) -> None:
        super().__init__(provider, kwargs)
        self.counts: Counts | None = None  # input/cache from message_start, then each delta's
        self.deltas = 0  # message_delta events seen (output known exactly once > 0)
        self.invalid = False  # the provider sent usage we cannot trust: bill nothing

    def observe(self, event: Any) -> bool:
        kind = getattr(event, "type", None)
        if kind == "content_block_delta":
            delta = event.delta
            field = _TEXT_FIELDS.get(getattr(delta, "type", None))  # type: ignore[arg-type]
            if field is not None:
                text = getattr(delta, field, None)
                if isinstance(text, str):
                    self.chars += len(text)
        elif kind == "message_delta":
            counts = read_counts(getattr(event, "usage", None), DELTA_REQUIRED)
            if counts is None:
                self.invalid = True
            elif self.counts is None:
                self.counts = counts
            else:
                self.counts.update(counts)  # cumulative: overwrite, field by field
            self.deltas += 1
        elif kind == "message_start":
            message = getattr(event, "message", None)
            model, rid = getattr(message, "model", None), getattr(message, "id", None)
            if isinstance(model, str):
                self.model = model
            if isinstance(rid, str):
                self.response_id = rid
            counts = read_counts(getattr(message, "usage", None))
            if counts is None:
                self.invalid = True
            else:
                self.counts = counts
        elif kind == "message_stop":
            self._complete()
        return False

    def _complete(self) -> None:
        if not self.invalid and self.deltas and self.counts is not None:
            self.exact = build_usage(self.counts, self.model, self.response_id)

    def partial(self) -> Usage | None:
        if self.invalid or self.counts is None:
            return None
        # message_start's output_tokens is a placeholder: output is known only from a delta
        output = self.counts.get("output_tokens", 0) if self.deltas else 0
        return build_usage(self.counts, self.model, self.response_id, output=output)

    def final(self, complete: bool) -> Usage | None:
        if self.invalid and self.exact is None:
            return None
        return super().final(complete)

    def estimate_when_complete(self) -> bool:
        return self.counts is not None  # ended without message_stop: bill what is known


class Messages(Endpoint):
    """``create`` and ``parse``: a ``Message``, a ``Stream`` of raw events, or a raw response."""

    provider = "anthropic"

    def __init__(self, name: str) -> None:
        self.name = name

    def kind(self, result: Any) -> Kind:
        cls = type(result)
        kind = _KINDS.get(cls)
        if kind is None:  # probing a pydantic model class is slow: once per class
            if hasattr(cls, "__next__") or hasattr(cls, "__anext__"):
                kind = "stream"
            elif hasattr(cls, "http_request") and hasattr(cls, "parse"):
                kind = "raw"  # .with_raw_response / .with_streaming_response
            else:
                kind = "response"
            _KINDS[cls] = kind
        return kind

    # the reader itself (one call less on every metered call than a method calling it)
    usage: Callable[[Any], Usage | None] = staticmethod(message_usage)  # type: ignore[assignment]

    def reducer(self, kwargs: Mapping[str, Any], hint: Any) -> Reducer:
        return MessageReducer(self.provider, kwargs)

    def parse_raw(self, raw: Any) -> Any:
        """A raw response's JSON body when it is already read (never reads a streamed one)."""
        http = getattr(raw, "http_response", None)
        if http is None:
            return None
        if "event-stream" in http.headers.get("content-type", ""):
            return None
        try:
            content = http.content  # raises ResponseNotRead for a body not read yet
        except Exception:
            return None
        try:
            body = json.loads(content)
        except ValueError:
            return None
        return body if isinstance(body, dict) and body.get("type") == "message" else None


class MessageStreamHelper(Messages):
    """``messages.stream(...)``: a stream manager that sends its request when entered (``wrap()``
    enters it under the proxy's route; the HTTP layer meters the raw stream the helper reads)."""

    returns_manager = True

    def kind(self, result: Any) -> Kind:
        return "manager"


_CREATE = Messages("messages.create")
_PARSE = Messages("messages.parse")
_STREAM = MessageStreamHelper("messages.stream")
_BETA_CREATE = Messages("beta.messages.create")
_BETA_PARSE = Messages("beta.messages.parse")
_BETA_STREAM = MessageStreamHelper("beta.messages.stream")



def _targets() -> list[Target]:
    """Nothing beyond the base client: the ``stream()`` helpers' ``close()`` closes the raw stream
    the HTTP layer proxies."""
    return []


# Every call passes through the base client (first party, Bedrock, Vertex, Foundry: their paths are
# rewritten later, when the request is built); ``/v1/messages/count_tokens`` is never metered.
BASE_CLIENT = BaseClient("anthropic._base_client", {"/v1/messages": _CREATE})


def _resource(create: Endpoint, parse: Endpoint, stream: Endpoint) -> dict[str, Any]:
    return {"create": create, "parse": parse, "stream": stream,
            "with_raw_response": HELPER, "with_streaming_response": HELPER}


# The beta resource's tool runners and threads (2.x) make their calls through the resource's
# ``_client``, not through ``self``'s methods: evaluated with the proxy as ``self`` (HELPER), they
# read the proxy's ``_client``, the wrapped client behind a proxy of the whole tree (set below).
_BETA_MESSAGES = {**_resource(_BETA_CREATE, _BETA_PARSE, _BETA_STREAM), "tool_runner": HELPER, "thread": HELPER}

PROVIDER = Provider(
    name="anthropic",
    package="anthropic",
    versions=">=0.40,<3",
    targets=_targets,
    base_client=BASE_CLIENT,
    client_tree={
        "messages": _resource(_CREATE, _PARSE, _STREAM),
        "beta": {
            "messages": _BETA_MESSAGES,
            "with_raw_response": HELPER,
            "with_streaming_response": HELPER,
        },
        "with_raw_response": HELPER,
        "with_streaming_response": HELPER,
        **REQUEST_METHODS,
        "with_options": CLIENT,
        "copy": CLIENT,
        "with_middleware": CLIENT,
    },
)
_BETA_MESSAGES["_client"] = PROVIDER.client_tree  # (the tree is its own child there)
