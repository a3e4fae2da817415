"""Where usage lives in Mistral chat responses (``mistralai``), normalised (pure functions).

``usage`` (``UsageInfo``): ``prompt_tokens`` (**including** ``prompt_tokens_details.cached_tokens``),
``completion_tokens``, ``total_tokens``. Streams (``CompletionEvent``, whose ``data`` is a
``CompletionChunk``) carry the usage on their last chunk only.

The shape is OpenAI's chat usage, so the OpenAI reader reads it (an invalid count makes the
record ``None``). ``UsageInfo`` defaults every count to 0, so a usage object the server sent
without counts would read as zeros: with none of them set by the server (pydantic's fields-set) the
usage is missing, never a zero bill; a ``total_tokens`` left at 0 is the sum of the parts.
``prompt_tokens_details`` is not a declared field (it arrives in the model's extras, as a dict).
"""

from __future__ import annotations

from typing import Any

from .._usage import Usage
from ._base import read_field
from ._openai_usage import chat_usage

__all__ = ["chunk_chars", "chunk_usage", "response_usage", "usage_from"]

_MAIN = frozenset(("prompt_tokens", "completion_tokens", "total_tokens"))


def _unsent(u: Any) -> bool:
    """Whether a pydantic ``UsageInfo`` carries none of the counts (all three are its defaults)."""
    if u.__class__ is dict:
        return False
    try:
        sent: set[str] = object.__getattribute__(u, "__pydantic_fields_set__")
    except AttributeError:
        return False
    return not (_MAIN & sent)


def usage_from(u: Any, model: Any, response_id: Any) -> Usage | None:
    """A ``UsageInfo`` (or its JSON dict) as a normalised record: the OpenAI chat usage shape,
    read by the OpenAI reader, once the counts are known to come from the server."""
    if u is None or _unsent(u):
        return None
    usage = chat_usage(u, model, response_id)
    if usage is None:
        return None
    total = usage.total_tokens or usage.input_tokens + usage.output_tokens  # never a default 0
    return usage._replace(provider="mistral", total_tokens=total)


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
