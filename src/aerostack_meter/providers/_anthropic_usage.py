"""Where usage lives in Anthropic responses and stream events, normalised (pure functions).

Anthropic reports ``input_tokens`` *without* the cache: the normalised ``input_tokens`` is
``input_tokens + cache_creation_input_tokens + cache_read_input_tokens``. Beta responses may
carry ``usage.iterations``; ``compaction`` entries there are not included in the top-level
fields (per the SDK's docstring), so they are added. Every number comes off the wire through
:func:`to_count`: one hostile value makes the whole record invalid (``None``), never garbage.
"""

from __future__ import annotations

from typing import Any

from .._usage import _EMPTY, _MAX_UNITS, COUNT_BITS, Usage, new_usage, to_count
from ._base import fields_of, read_field

__all__ = ["DELTA_REQUIRED", "Counts", "build_usage", "message_usage", "read_counts"]

Counts = dict[str, Any]  # field -> int, plus "server_tool_use" -> dict, "compaction" -> tuple,
#                          "service_tier" -> str

_FIELDS = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens")
_START_REQUIRED = ("input_tokens", "output_tokens")
DELTA_REQUIRED = ("output_tokens",)  # a message_delta must say its cumulative output
# What the readers read of a message and of its usage: an extra field (one the SDK's model does
# not declare) by another name cannot change the result, so the one-frame path takes it too.
_MESSAGE_READ = frozenset({"usage", "model", "id"})
_USAGE_READ = frozenset({*_FIELDS, "output_tokens_details", "cache_creation", "service_tier",
                         "server_tool_use", "iterations"})


_get = read_field


def _fields(obj: Any) -> Any:
    if isinstance(obj, dict):
        return obj.items()
    return getattr(obj, "__dict__", {}).items()


def read_counts(u: Any, required: tuple[str, ...] = _START_REQUIRED) -> Counts | None:
    """The counts present in one usage object (a ``Message``'s or a ``message_delta``'s).

    ``None`` when the object is absent, a required field is missing, or any number is invalid.
    Optional fields that are absent (``None``) are left out, so a later value can overwrite an
    earlier one field by field (cumulative totals: last value wins).
    """
    if u is None:
        return None
    get = fields_of(u)
    out: Counts = {}
    for name in _FIELDS:
        raw = get(name)
        if raw is None:
            if name in required:
                return None
            continue
        if type(raw) is int and 0 <= raw < _MAX_UNITS:  # the common case, without a call
            out[name] = raw
            continue
        n = to_count(raw)
        if n is None:
            return None
        out[name] = n
    details = get("output_tokens_details")
    if details is not None:
        thinking = _get(details, "thinking_tokens")
        if thinking is not None:
            n = thinking if type(thinking) is int and 0 <= thinking < _MAX_UNITS else to_count(thinking)
            if n is None:
                return None
            out["thinking_tokens"] = n
    creation = get("cache_creation")  # the TTL breakdown of cache_creation_input_tokens
    if creation is not None:
        one_hour = _get(creation, "ephemeral_1h_input_tokens")
        if one_hour is not None:
            n = one_hour if type(one_hour) is int and 0 <= one_hour < _MAX_UNITS else to_count(one_hour)
            if n is None:
                return None
            out["cache_write_1h"] = n
    tier = get("service_tier")
    if isinstance(tier, str):
        out["service_tier"] = tier
    tools = get("server_tool_use")
    if tools is not None:
        counts: dict[str, int] = {}
        for key, value in _fields(tools):
            if value is None or not isinstance(key, str) or key.startswith("_"):
                continue
            n = to_count(value)
            if n is None:
                return None
            if n:
                counts[key] = n
        out["server_tool_use"] = counts
    iterations = get("iterations")
    if iterations is not None:
        compaction = _compaction(iterations)
        if compaction is None:
            return None
        out["compaction"] = compaction
    return out


def _compaction(iterations: Any) -> tuple[int, int, int, int] | None:
    """Sum of the ``compaction`` iterations: (input, cache_write, cache_read, output)."""
    if not isinstance(iterations, (list, tuple)):
        return None
    sums = [0, 0, 0, 0]
    for entry in iterations:
        if _get(entry, "type") != "compaction":
            continue
        for i, name in enumerate(_FIELDS):
            raw = _get(entry, name)
            if raw is None:
                continue
            n = to_count(raw)
            if n is None:
                return None
            sums[i] += n
    return sums[0], sums[1], sums[2], sums[3]


def build_usage(c: Counts, model: str | None, response_id: str | None, *,
                output: int | None = None, estimated: bool = False) -> Usage | None:
    """A normalised record from complete counts (``None`` if the input side is unknown)."""
    fresh = c.get("input_tokens")
    if fresh is None:
        return None
    write = c.get("cache_creation_input_tokens", 0)
    read = c.get("cache_read_input_tokens", 0)
    out = c.get("output_tokens", 0) if output is None else output
    comp = c.get("compaction")
    if comp:
        fresh, write, read, out = fresh + comp[0], write + comp[1], read + comp[2], out + comp[3]
    inp = fresh + write + read
    total = inp + out
    if not 0 <= total < _MAX_UNITS:  # (to_count: the parts are valid counts already)
        return None
    # positionally, in Usage's field order (keywords cost twice as much on every call)
    return Usage("anthropic", model, inp, out, total, read, write, min(c.get("thinking_tokens", 0), out),
                 0, 0, c.get("server_tool_use") or {}, response_id, estimated,
                 min(c.get("cache_write_1h", 0), write), c.get("service_tier"))


def message_usage(message: Any) -> Usage | None:
    """Usage of a complete ``Message``/``BetaMessage`` (or its JSON body).

    The SDK's own models with the common fields (the four counts, the cache TTL breakdown, the
    service tier) are read straight from their ``__dict__`` in one frame; anything else (a dict,
    an extra field by a name it reads, thinking, server tools, iterations, a value that is not a
    plain count) takes the general path below, which gives the same result."""
    try:
        extra = message.__pydantic_extra__
        if not extra or _MESSAGE_READ.isdisjoint(extra):  # (extras it does not read change nothing)
            md = message.__dict__
            u = md["usage"]
            extra = u.__pydantic_extra__
            if not extra or _USAGE_READ.isdisjoint(extra):
                ud = u.__dict__
                fresh = ud["input_tokens"]
                out = ud["output_tokens"]
                write = ud.get("cache_creation_input_tokens")
                if write is None:
                    write = 0
                read = ud.get("cache_read_input_tokens")
                if read is None:
                    read = 0
                cc = ud.get("cache_creation")
                one_h = None if cc is None else cc.__dict__.get("ephemeral_1h_input_tokens")
                if one_h is None:
                    one_h = 0
                if (type(fresh) is int and type(out) is int and type(write) is int and type(read) is int
                        and type(one_h) is int and not (fresh | out | write | read | one_h) >> COUNT_BITS
                        and (cc is None or not cc.__pydantic_extra__
                                                             or "ephemeral_1h_input_tokens" not in cc.__pydantic_extra__)
                        and ud.get("output_tokens_details") is None and ud.get("server_tool_use") is None
                        and ud.get("iterations") is None):
                    inp = fresh + write + read
                    total = inp + out
                    if total < _MAX_UNITS:
                        model = md.get("model")
                        rid = md.get("id")
                        tier = ud.get("service_tier")
                        return new_usage(Usage, (
                            "anthropic", model if isinstance(model, str) else None, inp, out, total, read,
                            write, 0, 0, 0, _EMPTY, rid if isinstance(rid, str) else None, False,
                            one_h if one_h <= write else write, tier if isinstance(tier, str) else None))
    except (AttributeError, KeyError, TypeError):
        pass
    get = fields_of(message)
    counts = read_counts(get("usage"))
    if counts is None:
        return None
    model = get("model")
    rid = get("id")
    return build_usage(counts, model if isinstance(model, str) else None,
                       rid if isinstance(rid, str) else None)
