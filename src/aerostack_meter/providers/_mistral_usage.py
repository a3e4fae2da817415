"""Where usage lives in Mistral chat responses (``mistralai``), normalised (pure functions).

``usage`` (``UsageInfo``): ``prompt_tokens`` (**including** ``prompt_tokens_details.cached_tokens``),
``completion_tokens``, ``total_tokens``. Streams (``CompletionEvent``, whose ``data`` is a
``CompletionChunk``) carry the usage on their last chunk only.

``UsageInfo`` defaults every count to 0, so a usage object the server sent without counts reads
as zeros: a count is taken only when the server set it (pydantic's fields-set), otherwise the usage
is missing, never a zero bill. ``prompt_tokens_details`` is not a declared field (it arrives in the
model's extras, as a dict). Every number goes through :func:`to_count`: an invalid one makes the
record ``None``.
"""

from __future__ import annotations

from typing import Any

from .._usage import Usage, to_count
from ._base import read_field

__all__ = ["chunk_chars", "chunk_usage", "response_usage", "usage_from"]

_MAIN = frozenset(("prompt_tokens", "completion_tokens", "total_tokens"))


def _sent(u: Any) -> frozenset[str] | set[str] | None:
    """The fields the server sent (a pydantic model), or None when that cannot be known."""
    if u.__class__ is dict:
        return None
    try:
        fields: set[str] = object.__getattribute__(u, "__pydantic_fields_set__")
    except AttributeError:
        return None
    return fields


def _count(u: Any, name: str, sent: frozenset[str] | set[str] | None) -> int | None:
    if sent is not None and name not in sent:
        return None
    raw = read_field(u, name)
    if raw is None:
        return None
    n = to_count(raw)
    if n is None:
        raise ValueError(name)
    return n


def usage_from(u: Any, model: Any, response_id: Any) -> Usage | None:
    """A ``UsageInfo`` (or its JSON dict) as a normalised record."""
    if u is None:
        return None
    sent = _sent(u)
    try:
        inp = _count(u, "prompt_tokens", sent)
        out = _count(u, "completion_tokens", sent)
        total = _count(u, "total_tokens", sent)
    except ValueError:
        return None
    if inp is None and out is None:
        return None
    inp = inp or 0
    out = out or 0
    if not total:
        total = inp + out
    if to_count(total) is None:
        return None
    details = read_field(u, "prompt_tokens_details")
    cached = to_count(read_field(details, "cached_tokens")) or 0
    return Usage("mistral", model if isinstance(model, str) else None, inp, out, total,
                 cached_input_tokens=min(cached, inp),
                 response_id=response_id if isinstance(response_id, str) else None)


def response_usage(response: Any) -> Usage | None:
    """Usage of a ``ChatCompletionResponse`` (or its JSON body)."""
    return usage_from(read_field(response, "usage"), read_field(response, "model"),
                      read_field(response, "id"))


def _chunk(event: Any) -> Any:
    data = read_field(event, "data")  # CompletionEvent -> CompletionChunk
    return event if data is None else data


def chunk_usage(event: Any) -> Usage | None:
    """Usage on one stream event (only the last one has it)."""
    chunk = _chunk(event)
    u = read_field(chunk, "usage")
    if u is None:
        return None
    return usage_from(u, read_field(chunk, "model"), read_field(chunk, "id"))


def chunk_chars(event: Any) -> int:
    """Output characters in one stream event (for the estimate of a stream left early)."""
    chars = 0
    for choice in read_field(_chunk(event), "choices") or ():
        content = read_field(read_field(choice, "delta"), "content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):  # content chunks (text, thinking)
            for part in content:
                text = read_field(part, "text")
                if isinstance(text, str):
                    chars += len(text)
    return chars
