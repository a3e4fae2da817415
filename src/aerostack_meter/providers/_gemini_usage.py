"""Where usage lives in Google Gemini responses (``google-genai``), normalised (pure functions).

``usage_metadata`` (``usageMetadata`` in a JSON body), the same on the Gemini API and Vertex AI:

* ``prompt_token_count`` — the prompt, **including** ``cached_content_token_count``;
* ``tool_use_prompt_token_count`` — input from tool use (e.g. search results), reported **apart**
  from the prompt;
* ``candidates_token_count`` — the visible output;
* ``thoughts_token_count`` — thinking output, **not** part of ``candidates_token_count``;
* ``total_token_count`` — what the provider bills: all of the above.

Normalised: ``input_tokens = prompt + tool_use_prompt`` (``cached_input_tokens`` = the cached part),
``output_tokens = candidates + thoughts`` (``reasoning_tokens`` = thoughts, counted once),
``total_tokens = total_token_count`` when the provider sends a non-zero one, else input + output.

In a stream every chunk carries the counts **so far**: the stream's usage is the last chunk's
(never a sum of chunks), and a field the last chunk leaves out keeps the earlier value
(:func:`merge_counts`: a final chunk without ``candidates_token_count`` does not make the output
zero).

Every number comes off the wire through :func:`to_count`: one invalid value makes the whole record
invalid (``None``, counted as usage missing, never billed).
"""

from __future__ import annotations

from typing import Any

from .._usage import _EMPTY, Usage, to_count, usage_of
from ._base import read_field

__all__ = ["Counts", "build_usage", "merge_counts", "read_counts", "response_usage"]

Counts = dict[str, int]

# normalised field, SDK attribute, JSON key
_FIELDS = (
    ("prompt", "prompt_token_count", "promptTokenCount"),
    ("cached", "cached_content_token_count", "cachedContentTokenCount"),
    ("tool_use_prompt", "tool_use_prompt_token_count", "toolUsePromptTokenCount"),
    ("candidates", "candidates_token_count", "candidatesTokenCount"),
    ("thoughts", "thoughts_token_count", "thoughtsTokenCount"),
    ("total", "total_token_count", "totalTokenCount"),
)
_MAIN = ("prompt", "candidates", "thoughts", "total")


def read_counts(meta: Any) -> Counts | None:
    """The counts present in one ``usage_metadata`` (absent fields left out).

    ``None`` when there is no usage, none of the main counts is present, or any count is invalid.
    """
    if meta is None:
        return None
    if meta.__class__ is dict:  # a JSON body: camelCase keys (snake_case accepted too)
        values = [meta.get(key, meta.get(attr)) for _, attr, key in _FIELDS]
    else:  # an SDK model: its declared fields are in __dict__ (one lookup, not six getattr)
        d = getattr(meta, "__dict__", None)
        if d is None or "prompt_token_count" not in d:
            values = [read_field(meta, attr) for _, attr, _ in _FIELDS]
        else:
            values = [d.get(attr) for _, attr, _ in _FIELDS]
    out: Counts = {}
    for (name, _, _), raw in zip(_FIELDS, values, strict=True):
        if raw is None:
            continue
        n = to_count(raw)
        if n is None:
            return None
        out[name] = n
    if not any(name in out for name in _MAIN):
        return None
    return out


def merge_counts(earlier: Counts | None, later: Counts) -> Counts:
    """A stream's counts after one more chunk: the later value of each field wins."""
    if earlier is None:
        return dict(later)
    merged = dict(earlier)
    merged.update(later)
    return merged


def build_usage(c: Counts, model: str | None, response_id: str | None, *,
                estimated: bool = False) -> Usage | None:
    """A normalised record from counts; ``None`` when nothing was counted."""
    prompt = c.get("prompt", 0)
    tool_use = c.get("tool_use_prompt", 0)
    thoughts = c.get("thoughts", 0)
    inp = prompt + tool_use
    out = c.get("candidates", 0) + thoughts
    total = c.get("total") or 0
    if not total:  # absent or zero: never bill zero when the parts say otherwise
        total = inp + out
    if not total or to_count(total) is None:
        return None
    return Usage("gemini", model, inp, out, total,
                 cached_input_tokens=min(c.get("cached", 0), prompt),
                 reasoning_tokens=thoughts, response_id=response_id, estimated=estimated)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def response_meta(response: Any) -> tuple[Any, str | None, str | None]:
    """``(usage_metadata, model_version, response_id)`` of a response or stream chunk."""
    if response.__class__ is dict:
        return (response.get("usageMetadata", response.get("usage_metadata")),
                _str(response.get("modelVersion")), _str(response.get("responseId")))
    return (read_field(response, "usage_metadata"), _str(read_field(response, "model_version")),
            _str(read_field(response, "response_id")))


def response_usage(response: Any) -> Usage | None:
    """Usage of a complete ``GenerateContentResponse`` (or its JSON body).

    The common case, the SDK's models with every count an int (or absent), is read in this one
    frame from the models' ``__dict__`` (pydantic 2 keeps every declared field there: one
    subscript each, where an attribute read of a pydantic model costs ~400 instructions), with
    the rules of :func:`read_counts` and :func:`build_usage`; anything else (a JSON body, a float
    count, a negative one) takes the general readers."""
    if response.__class__ is not dict:
        try:
            d = response.__dict__
            md = d["usage_metadata"].__dict__
            prompt = md["prompt_token_count"]
            cached = md["cached_content_token_count"]
            tool_use = md["tool_use_prompt_token_count"]
            candidates = md["candidates_token_count"]
            thoughts = md["thoughts_token_count"]
            total = md["total_token_count"]
        except (AttributeError, KeyError, TypeError):  # not the SDK's models (or no usage_metadata)
            return _general_usage(response)
        if prompt is None and candidates is None and thoughts is None and total is None:
            return None
        if prompt is None:
            prompt = 0
        if cached is None:
            cached = 0
        if tool_use is None:
            tool_use = 0
        if candidates is None:
            candidates = 0
        if thoughts is None:
            thoughts = 0
        if total is None:
            total = 0
        # ints only (a bool is not one), each in [0, 2**53): one OR and one shift for the range
        if (type(prompt) is int and type(cached) is int and type(tool_use) is int
                and type(candidates) is int and type(thoughts) is int and type(total) is int
                and not (prompt | cached | tool_use | candidates | thoughts | total) >> _BITS):
            inp = prompt + tool_use
            out = candidates + thoughts
            if not total:  # absent or zero: never bill zero when the parts say otherwise
                total = inp + out
                if not total or total >> _BITS:
                    return None
            model = d.get("model_version")
            rid = d.get("response_id")
            # positionally, in Usage's field order
            return usage_of(("gemini", model if isinstance(model, str) and model else None, inp, out,
                             total, cached if cached < prompt else prompt, 0, thoughts, 0, 0, _EMPTY,
                             rid if isinstance(rid, str) and rid else None, False, 0, None))
    return _general_usage(response)


_BITS = 53  # a count is below 2**53 (_MAX_UNITS): ``n >> 53`` is 0 for every count, not for a negative


def _general_usage(response: Any) -> Usage | None:
    meta, model, rid = response_meta(response)
    counts = read_counts(meta)
    if counts is None:
        return None
    return build_usage(counts, model, rid)
