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

from .._usage import _EMPTY, _MAX_UNITS, Usage, to_count
from ._base import read_field
from ._openai_usage import _details, chat_usage

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
    if u is None:
        return None
    d = getattr(u, "__dict__", None)  # a pydantic model: its declared fields (a dict has none)
    if d is not None and "prompt_tokens" in d:
        usage = _model_usage(u, d, model, response_id)
        if usage is not _GENERAL:
            return usage  # type: ignore[return-value]
    return _general_usage(u, model, response_id)


_GENERAL = object()  # a value the one-pass reader leaves to the general one (not an int count)


def _model_usage(u: Any, d: dict[str, Any], model: Any, response_id: Any) -> object:
    """The common case in one pass: a ``UsageInfo`` model whose counts are ints (or absent), read
    from its ``__dict__``; the same rules as the general path (:func:`chat_usage`, then a zero
    total is the sum of the parts). Anything else: ``_GENERAL``."""
    try:
        sent = object.__getattribute__(u, "__pydantic_fields_set__")
    except AttributeError:
        return _GENERAL
    if not (_MAIN & sent):
        return None
    inp = d.get("prompt_tokens")
    out = d.get("completion_tokens")
    total = d.get("total_tokens")
    for n in (inp, out, total):
        if n is not None and (type(n) is not int or not 0 <= n < _MAX_UNITS):
            return _GENERAL
    if inp is None and out is None:
        return None
    inp = inp or 0
    out = out or 0
    if not total:  # absent or a default 0: the sum of the parts, never a zero bill
        total = inp + out
        if total >= _MAX_UNITS:  # two valid parts whose sum no JSON number holds exactly
            return None
    cached, cache_write, audio_in = _details(read_field(u, "prompt_tokens_details"), "cached_tokens",
                                             "cache_write_tokens", "audio_tokens")
    reasoning, audio_out, _ = _details(read_field(u, "completion_tokens_details"), "reasoning_tokens",
                                       "audio_tokens")
    # positionally, in Usage's field order
    return Usage("mistral", model if isinstance(model, str) else None, inp, out, total, cached,
                 cache_write, reasoning, audio_in, audio_out, _EMPTY,
                 response_id if isinstance(response_id, str) else None, False)


def _general_usage(u: Any, model: Any, response_id: Any) -> Usage | None:
    if _unsent(u):
        return None
    usage = chat_usage(u, model, response_id)
    if usage is None:
        return None
    total = usage.total_tokens or to_count(usage.input_tokens + usage.output_tokens)  # never a default 0
    if total is None:  # two valid parts whose sum no JSON number holds exactly
        return None
    return usage._replace(provider="mistral", total_tokens=total)


def response_usage(response: Any) -> Usage | None:
    """Usage of a ``ChatCompletionResponse`` (or its JSON body)."""
    d = getattr(response, "__dict__", None)  # a pydantic model's declared fields (a dict has none)
    if d is not None and "usage" in d and "model" in d and "id" in d:
        return usage_from(d["usage"], d["model"], d["id"])
    return usage_from(read_field(response, "usage"), read_field(response, "model"),
                      read_field(response, "id"))


def _chunk(event: Any) -> Any:
    data = read_field(event, "data")  # CompletionEvent -> CompletionChunk
    return event if data is None else data


def chunk_usage(event: Any) -> Usage | None:
    """Usage on one stream event (only the last one has it)."""
    try:  # the SDK's CompletionEvent: plain attribute reads of declared fields (the per-event path)
        chunk = event.data
        u = chunk.usage
    except AttributeError:  # a chunk itself, a JSON dict, ...: field by field
        chunk = _chunk(event)
        u = read_field(chunk, "usage")
    if u is None:
        return None
    return usage_from(u, read_field(chunk, "model"), read_field(chunk, "id"))


def chunk_chars(event: Any) -> int:
    """Output characters in one stream event (for the estimate of a stream left early)."""
    try:  # the SDK's CompletionEvent (see chunk_usage)
        chars = 0
        for choice in event.data.choices or ():
            content = choice.delta.content
            if isinstance(content, str):
                chars += len(content)
            elif isinstance(content, list):
                chars += _parts_chars(content)
        return chars
    except AttributeError:
        pass
    chars = 0
    for choice in read_field(_chunk(event), "choices") or ():
        content = read_field(read_field(choice, "delta"), "content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            chars += _parts_chars(content)
    return chars


def _parts_chars(content: list[Any]) -> int:
    """Characters of content chunks (text, thinking)."""
    chars = 0
    for part in content:
        text = read_field(part, "text")
        if isinstance(text, str):
            chars += len(text)
    return chars
