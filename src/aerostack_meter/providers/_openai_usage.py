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

from .._usage import _EMPTY, _MAX_UNITS, Usage, to_count, usage_of
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


def _detail(value: Any) -> int:
    return 0 if value is None else to_count(value) or 0


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _usage(u: Any, model: Any, response_id: Any, inp_f: str, out_f: str, idet_f: str,
           odet_f: str, service_tier: Any) -> Usage | None:
    if u is None:
        return None
    try:  # the SDK's own models (pydantic 2), declared fields only, valid counts: in this frame
        if not u.__pydantic_extra__:
            d = u.__dict__
            inp = d[inp_f]
            out = d[out_f]
            total = d["total_tokens"]
            if (type(inp) is int and type(out) is int and type(total) is int and 0 <= inp < _MAX_UNITS
                    and 0 <= out < _MAX_UNITS and 0 <= total < _MAX_UNITS):
                idet = d.get(idet_f)
                odet = d.get(odet_f)
                if (idet is None or not idet.__pydantic_extra__) and (odet is None or not odet.__pydantic_extra__):
                    cached = cache_write = audio_in = reasoning = audio_out = None
                    if idet is not None:
                        dd = idet.__dict__
                        cached, cache_write, audio_in = (
                            dd.get("cached_tokens"), dd.get("cache_write_tokens"), dd.get("audio_tokens"))
                    if odet is not None:
                        dd = odet.__dict__
                        reasoning, audio_out = dd.get("reasoning_tokens"), dd.get("audio_tokens")
                    # a detail: a valid count, else 0 (as _details)
                    return usage_of(("openai", model if isinstance(model, str) else None, inp, out, total,
                                     cached if type(cached) is int and 0 <= cached < _MAX_UNITS else _detail(cached),
                                     cache_write if type(cache_write) is int and 0 <= cache_write < _MAX_UNITS
                                     else _detail(cache_write),
                                     reasoning if type(reasoning) is int and 0 <= reasoning < _MAX_UNITS
                                     else _detail(reasoning),
                                     audio_in if type(audio_in) is int and 0 <= audio_in < _MAX_UNITS
                                     else _detail(audio_in),
                                     audio_out if type(audio_out) is int and 0 <= audio_out < _MAX_UNITS
                                     else _detail(audio_out),
                                     _EMPTY, response_id if isinstance(response_id, str) else None, False, 0,
                                 service_tier if isinstance(service_tier, str) else None))
    except (AttributeError, KeyError, TypeError):
        pass
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
