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

from .._usage import Usage, to_count
from ._base import read_field

__all__ = ["chat_usage", "get", "responses_usage"]


class _Invalid(Exception):
    pass


get = read_field  # ``obj.name`` (SDK models) or ``obj[name]`` (a body read as JSON); None when absent


def _count(obj: Any, name: str) -> int | None:
    value = get(obj, name)
    if value is None:
        return None
    n = to_count(value)
    if n is None:
        raise _Invalid(name)
    return n


def _detail(obj: Any, name: str) -> int:
    return to_count(get(obj, name)) or 0


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _usage(u: Any, model: Any, response_id: Any, inp_f: str, out_f: str, idet_f: str,
           odet_f: str, service_tier: Any) -> Usage | None:
    if u is None:
        return None
    try:
        inp = _count(u, inp_f)
        out = _count(u, out_f)
        if inp is None and out is None:
            return None
        total = _count(u, "total_tokens")
        idet = get(u, idet_f)
        odet = get(u, odet_f)
    except _Invalid:
        return None
    inp = inp or 0
    out = out or 0
    if total is None:
        total = to_count(inp + out)
        if total is None:  # two valid parts whose sum no JSON number holds exactly: invalid usage
            return None
    return Usage(
        "openai", _str(model), inp, out, total,
        cached_input_tokens=_detail(idet, "cached_tokens"),
        cache_write_tokens=_detail(idet, "cache_write_tokens"),  # 2.x and later
        reasoning_tokens=_detail(odet, "reasoning_tokens"),
        audio_input_tokens=_detail(idet, "audio_tokens"),
        audio_output_tokens=_detail(odet, "audio_tokens"),
        response_id=_str(response_id),
        service_tier=_str(service_tier),
    )


def chat_usage(u: Any, model: Any, response_id: Any, service_tier: Any = None) -> Usage | None:
    """``CompletionUsage`` (chat, legacy completions, their chunks) and embeddings' ``Usage``:
    ``prompt_tokens`` include cached tokens, ``completion_tokens`` include reasoning tokens."""
    return _usage(u, model, response_id, "prompt_tokens", "completion_tokens",
                  "prompt_tokens_details", "completion_tokens_details", service_tier)


def responses_usage(u: Any, model: Any, response_id: Any, service_tier: Any = None) -> Usage | None:
    """``ResponseUsage``: ``input_tokens`` include cached, ``output_tokens`` include reasoning."""
    return _usage(u, model, response_id, "input_tokens", "output_tokens",
                  "input_tokens_details", "output_tokens_details", service_tier)
