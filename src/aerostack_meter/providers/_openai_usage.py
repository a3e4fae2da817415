"""Where usage lives in OpenAI responses, read defensively.

Usage comes from the wire: an OpenAI-compatible server may send ``null``, negative numbers,
strings or absurdly large values. A main count (input, output, total) that is present but not a
valid count makes the whole usage invalid (``None``: counted as "usage missing", never billed); a
detail (cached, cache writes, reasoning, audio) that is not a valid count, ``null`` or absent counts
as zero, so a bad detail never hides valid totals (1.x leaves details it does not know, such as
``cache_write_tokens``, as the server sent them). Objects may be the SDK's models or plain dicts.
"""

from __future__ import annotations

from typing import Any

from .._usage import _EMPTY, _MAX_UNITS, Usage, to_count
from ._base import fields_of, read_field

__all__ = ["chat_usage", "get", "responses_usage"]


class _Invalid(Exception):
    pass


get = read_field  # ``obj.name`` (SDK models) or ``obj[name]`` (a body read as JSON); None when absent


def _count(get: Any, name: str) -> int | None:
    value = get(name)
    if value is None:
        return None
    if type(value) is int and 0 <= value < _MAX_UNITS:  # the common case, without a call
        return value
    n = to_count(value)
    if n is None:
        raise _Invalid(name)
    return n


def _details(obj: Any, a: str, b: str, c: str | None = None) -> tuple[int, int, int]:
    """Detail counts ``a``, ``b`` (and ``c``) of one details object; 0 for each absent or invalid."""
    if obj is None:
        return 0, 0, 0
    get = fields_of(obj)
    return (to_count(get(a)) or 0, to_count(get(b)) or 0,
            (to_count(get(c)) or 0) if c is not None else 0)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _usage(u: Any, model: Any, response_id: Any, inp_f: str, out_f: str, idet_f: str,
           odet_f: str, service_tier: Any) -> Usage | None:
    if u is None:
        return None
    get = fields_of(u)
    try:
        inp = _count(get, inp_f)
        out = _count(get, out_f)
        if inp is None and out is None:
            return None
        total = _count(get, "total_tokens")
    except _Invalid:
        return None
    inp = inp or 0
    out = out or 0
    if total is None:
        total = to_count(inp + out)
        if total is None:  # two valid parts whose sum no JSON number holds exactly: invalid usage
            return None
    cached, cache_write, audio_in = _details(get(idet_f), "cached_tokens", "cache_write_tokens", "audio_tokens")
    reasoning, audio_out, _ = _details(get(odet_f), "reasoning_tokens", "audio_tokens")
    # positionally, in Usage's field order (keywords cost twice as much on every call)
    return Usage("openai", _str(model), inp, out, total, cached, cache_write, reasoning, audio_in,
                 audio_out, _EMPTY, _str(response_id), False, 0, _str(service_tier))


def chat_usage(u: Any, model: Any, response_id: Any, service_tier: Any = None) -> Usage | None:
    """``CompletionUsage`` (chat, legacy completions, their chunks) and embeddings' ``Usage``:
    ``prompt_tokens`` include cached tokens, ``completion_tokens`` include reasoning tokens."""
    return _usage(u, model, response_id, "prompt_tokens", "completion_tokens",
                  "prompt_tokens_details", "completion_tokens_details", service_tier)


def responses_usage(u: Any, model: Any, response_id: Any, service_tier: Any = None) -> Usage | None:
    """``ResponseUsage``: ``input_tokens`` include cached, ``output_tokens`` include reasoning."""
    return _usage(u, model, response_id, "input_tokens", "output_tokens",
                  "input_tokens_details", "output_tokens_details", service_tier)
