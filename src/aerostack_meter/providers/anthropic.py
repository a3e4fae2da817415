"""Anthropic: which methods are metered and where their usage lives.

Metered (sync and async, on ``messages`` and ``beta.messages``): ``create`` (plain and
``stream=True``), ``parse`` and the ``stream()`` helper, each patched on its own class because
none of them calls another (``stream()`` and ``parse()`` post directly). The Bedrock and Vertex
beta resources copy these functions into their own classes, so those classes are patched too;
every other client (Bedrock, Vertex and Foundry ``messages``, ...) shares or subclasses the
first-party classes. ``count_tokens`` and message batches are never metered.

Streams: ``message_start`` carries the input and cache counts, ``message_delta`` cumulative
totals (the last value wins; never added up). The ``stream()`` helper is metered when its
manager exits, from the helper's own final snapshot, so ``text_stream``, ``until_done()`` and
``get_final_message()`` keep iterating the SDK's object untouched.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .._call import Endpoint, Kind, Reducer
from .._usage import Usage
from .._wrap import CLIENT, HELPER
from .._wrapping import Target
from ._anthropic_usage import DELTA_REQUIRED, Counts, build_usage, message_usage, read_counts
from ._base import Provider

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

    def absorb_snapshot(self, snapshot: Any) -> bool:
        """Take what a helper's message snapshot knows; True when its usage is usable."""
        model, rid = getattr(snapshot, "model", None), getattr(snapshot, "id", None)
        if isinstance(model, str):
            self.model = model
        if isinstance(rid, str):
            self.response_id = rid
        counts = read_counts(getattr(snapshot, "usage", None))
        if counts is None:
            self.invalid = True
            return False
        self.counts = counts
        self.deltas = 1 if getattr(snapshot, "stop_reason", None) is not None else 0
        chars = 0
        for block in getattr(snapshot, "content", None) or ():
            for name in ("text", "thinking"):
                text = getattr(block, name, None)
                if isinstance(text, str):
                    chars += len(text)
        self.chars = chars
        return True


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

    def usage(self, response: Any) -> Usage | None:
        return message_usage(response)

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
    """``messages.stream(...)``: a stream manager, metered when its ``with`` block exits."""

    def kind(self, result: Any) -> Kind:
        return "manager"

    def snapshot_usage(self, stream: Any, reducer: Reducer) -> Usage | None:
        try:
            snapshot = stream.current_message_snapshot  # asserts one exists (message_start seen)
        except AssertionError:
            return None
        if not isinstance(reducer, MessageReducer) or not reducer.absorb_snapshot(snapshot):
            return None
        if reducer.deltas and _exhausted(stream):
            assert reducer.counts is not None
            return build_usage(reducer.counts, reducer.model, reducer.response_id)
        return None  # left early: the core estimates from what the reducer now knows


_MISSING = object()


def _exhausted(stream: Any) -> bool:
    """Whether the helper read its stream to the end (its event generator has finished).

    The helper keeps no public flag for this; its ``_iterator`` generator is read when present.
    """
    it = getattr(stream, "_iterator", None)
    frame = getattr(it, "gi_frame", getattr(it, "ag_frame", _MISSING))
    return frame is _MISSING or frame is None


_CREATE = Messages("messages.create")
_PARSE = Messages("messages.parse")
_STREAM = MessageStreamHelper("messages.stream")
_BETA_CREATE = Messages("beta.messages.create")
_BETA_PARSE = Messages("beta.messages.parse")
_BETA_STREAM = MessageStreamHelper("beta.messages.stream")

_FIRST_PARTY = "anthropic.resources.messages.messages"
_BETA = "anthropic.resources.beta.messages.messages"
# Bedrock and Vertex beta resources hold *copies* of the beta functions (not subclasses).
_COPIED_BETA = ("anthropic.lib.vertex._beta_messages", "anthropic.lib.bedrock._beta_messages")


def _targets() -> list[Target]:
    out = []
    for module, (create, parse, stream) in (
        (_FIRST_PARTY, (_CREATE, _PARSE, _STREAM)),
        *((m, (_BETA_CREATE, _BETA_PARSE, _BETA_STREAM)) for m in (_BETA, *_COPIED_BETA)),
    ):
        for cls, is_async in (("Messages", False), ("AsyncMessages", True)):
            # is_async is explicit: the SDK's async ``create`` is hidden behind a sync decorator
            out.append(Target(module, f"{cls}.create", create, is_async))
            out.append(Target(module, f"{cls}.parse", parse, is_async))
            out.append(Target(module, f"{cls}.stream", stream, False))  # returns a manager
    return out


def _resource(create: Endpoint, parse: Endpoint, stream: Endpoint) -> dict[str, Any]:
    return {"create": create, "parse": parse, "stream": stream,
            "with_raw_response": HELPER, "with_streaming_response": HELPER}


PROVIDER = Provider(
    name="anthropic",
    package="anthropic",
    versions=">=0.40,<3",
    targets=_targets,
    client_tree={
        "messages": _resource(_CREATE, _PARSE, _STREAM),
        "beta": {
            "messages": _resource(_BETA_CREATE, _BETA_PARSE, _BETA_STREAM),
            "with_raw_response": HELPER,
            "with_streaming_response": HELPER,
        },
        "with_raw_response": HELPER,
        "with_streaming_response": HELPER,
        "with_options": CLIENT,
        "copy": CLIENT,
        "with_middleware": CLIENT,
    },
)
