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

__all__ = ["chat_usage", "get", "responses_usage"]


class _Invalid(Exception):
    pass


def get(obj: Any, name: str) -> Any:
    """``obj.name`` (SDK models), or ``obj[name]`` (a body read as JSON); ``None`` when absent."""
    if obj.__class__ is dict:
        return obj.get(name)
    return getattr(obj, name, None)  # None.name too: None


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


def chat_usage(u: Any, model: Any, response_id: Any) -> Usage | None:
    """``CompletionUsage`` (chat, legacy completions, their chunks) and embeddings' ``Usage``:
    ``prompt_tokens`` include cached tokens, ``completion_tokens`` include reasoning tokens."""
    if u is None:
        return None
    try:
        prompt = _count(u, "prompt_tokens")
        completion = _count(u, "completion_tokens")
        if prompt is None and completion is None:
            return None
        total = _count(u, "total_tokens")
        pd = get(u, "prompt_tokens_details")
        cd = get(u, "completion_tokens_details")
    except _Invalid:
        return None
    cached = _detail(pd, "cached_tokens")
    cache_write = _detail(pd, "cache_write_tokens")  # 2.x and later
    audio_in = _detail(pd, "audio_tokens")
    reasoning = _detail(cd, "reasoning_tokens")
    audio_out = _detail(cd, "audio_tokens")
    prompt = prompt or 0
    completion = completion or 0
    if total is None:
        total = to_count(prompt + completion)
        if total is None:  # two valid parts whose sum no JSON number holds exactly: invalid usage
            return None
    return Usage(
        "openai", _str(model), prompt, completion, total,
        cached_input_tokens=cached, cache_write_tokens=cache_write, reasoning_tokens=reasoning,
        audio_input_tokens=audio_in, audio_output_tokens=audio_out, response_id=_str(response_id),
    )


def responses_usage(u: Any, model: Any, response_id: Any) -> Usage | None:
    """``ResponseUsage``: ``input_tokens`` include cached, ``output_tokens`` include reasoning."""
    if u is None:
        return None
    try:
        inp = _count(u, "input_tokens")
        out = _count(u, "output_tokens")
        if inp is None and out is None:
            return None
        total = _count(u, "total_tokens")
        idet = get(u, "input_tokens_details")
        odet = get(u, "output_tokens_details")
    except _Invalid:
        return None
    cached = _detail(idet, "cached_tokens")
    cache_write = _detail(idet, "cache_write_tokens")  # 2.x and later
    reasoning = _detail(odet, "reasoning_tokens")
    inp = inp or 0
    out = out or 0
    if total is None:
        total = to_count(inp + out)
        if total is None:
            return None
    return Usage(
        "openai", _str(model), inp, out, total,
        cached_input_tokens=cached, cache_write_tokens=cache_write, reasoning_tokens=reasoning,
        response_id=_str(response_id),
    )
