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

from .._usage import _EMPTY, _MAX_UNITS, COUNT_BITS, Usage, new_usage, to_count
from ._base import fields_of, read_field

__all__ = ["CHAT_FIELDS", "RESPONSES_FIELDS", "chat_usage", "get", "response_usage", "responses_usage"]


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


#: the fields of a usage object: input, output, their details objects
CHAT_FIELDS = ("prompt_tokens", "completion_tokens", "prompt_tokens_details", "completion_tokens_details")
RESPONSES_FIELDS = ("input_tokens", "output_tokens", "input_tokens_details", "output_tokens_details")
# What the readers read of each object: an extra field (one the SDK's model does not declare) by
# another name cannot change the result, so the models' one-frame path takes such an object too.
_RESPONSE_READ = frozenset({"usage", "model", "id", "service_tier"})
_READ = {names: frozenset({*names, "total_tokens"}) for names in (CHAT_FIELDS, RESPONSES_FIELDS)}
_IDET_READ = frozenset({"cached_tokens", "cache_write_tokens", "audio_tokens"})
_ODET_READ = frozenset({"reasoning_tokens", "audio_tokens"})


def response_usage(names: tuple[str, str, str, str], response: Any) -> Usage | None:
    """Usage of a complete response (the SDK's model, or its body read as JSON) whose usage object
    has the fields ``names`` (:data:`CHAT_FIELDS`, :data:`RESPONSES_FIELDS`). The SDK's models are
    read from their ``__dict__`` (two frames in all); anything else by name, by the same rules."""
    try:
        extra = response.__pydantic_extra__
        if extra and not _RESPONSE_READ.isdisjoint(extra):  # (extras it does not read change nothing)
            raise TypeError
        d = response.__dict__
        u, model, rid, tier = d["usage"], d.get("model"), d.get("id"), d.get("service_tier")
    except (AttributeError, KeyError, TypeError):
        f = fields_of(response)
        u, model, rid, tier = f("usage"), f("model"), f("id"), f("service_tier")
    return _usage(u, model, rid, tier, names)


def _usage(u: Any, model: Any, response_id: Any, service_tier: Any,
           names: tuple[str, str, str, str]) -> Usage | None:
    if u is None:
        return None
    inp_f, out_f, idet_f, odet_f = names
    try:  # the SDK's own models (pydantic 2), declared fields only, plain counts: in this frame
        extra = u.__pydantic_extra__
        if not extra or _READ[names].isdisjoint(extra):
            d = u.__dict__
            inp = d[inp_f]
            out = d[out_f]
            total = d["total_tokens"]
            idet = d.get(idet_f)
            odet = d.get(odet_f)
            cached = cache_write = audio_in = reasoning = audio_out = 0
            if idet is not None:
                extra = idet.__pydantic_extra__
                if extra and not _IDET_READ.isdisjoint(extra):
                    raise TypeError
                dd = idet.__dict__  # (`or 0`: None and the falsy values _detail reads as 0)
                cached = dd.get("cached_tokens") or 0
                cache_write = dd.get("cache_write_tokens") or 0
                audio_in = dd.get("audio_tokens") or 0
            if odet is not None:
                extra = odet.__pydantic_extra__
                if extra and not _ODET_READ.isdisjoint(extra):
                    raise TypeError
                dd = odet.__dict__
                reasoning = dd.get("reasoning_tokens") or 0
                audio_out = dd.get("audio_tokens") or 0
            # every count a plain int in [0, 2**53) (else the general rules below decide)
            if (type(inp) is int and type(out) is int and type(total) is int and type(cached) is int
                    and type(cache_write) is int and type(audio_in) is int and type(reasoning) is int
                    and type(audio_out) is int
                    and not (inp | out | total | cached | cache_write | audio_in | reasoning | audio_out) >> COUNT_BITS):
                # positionally, in Usage's field order
                return new_usage(Usage, (
                    "openai", model if isinstance(model, str) else None, inp, out, total, cached, cache_write,
                    reasoning, audio_in, audio_out, _EMPTY, response_id if isinstance(response_id, str) else None,
                    False, 0, service_tier if isinstance(service_tier, str) else None))
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
    return _usage(u, model, response_id, service_tier, CHAT_FIELDS)


def responses_usage(u: Any, model: Any, response_id: Any, service_tier: Any = None) -> Usage | None:
    """``ResponseUsage``: ``input_tokens`` include cached, ``output_tokens`` include reasoning."""
    return _usage(u, model, response_id, service_tier, RESPONSES_FIELDS)
