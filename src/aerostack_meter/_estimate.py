"""Token estimates for streams that end before the provider reported usage.

``tiktoken`` is used for input text when it is installed *and* its encoding loads offline;
otherwise (and always for output, which is counted as it streams, without keeping text) the
documented approximation is one token per four characters, rounded up, at least one.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

__all__ = ["count_chars", "estimate_input_tokens", "tokens_from_chars"]

_TEXT_KEYS = ("content", "text", "input", "prompt", "system", "instructions", "messages", "parts")
_TEXT_SET = frozenset(_TEXT_KEYS)


def tokens_from_chars(chars: int) -> int:
    return max(1, -(-chars // 4))


def _fields(value: Any) -> Mapping[str, Any] | None:
    """The attributes of an SDK request object (a pydantic model, a plain object, a dataclass),
    read without copying anything: ``__dict__`` when the object has one, else a slotted
    dataclass's fields. ``None`` for anything else (numbers, bytes, files...)."""
    d = getattr(value, "__dict__", None)
    if type(d) is dict:
        return d
    names = getattr(type(value), "__dataclass_fields__", None)
    if type(names) is dict:
        return {k: getattr(value, k, None) for k in names if k in _TEXT_SET}
    return None


def count_chars(value: Any, _depth: int = 0) -> int:
    """Characters of text in a request argument (strings, lists, dicts of content parts, and
    SDK request objects: pydantic models such as google-genai ``Content``/``Part`` or mistralai
    ``UserMessage``, dataclasses, plain objects; their text attributes are read, never kept).

    Exact type checks first (a budget check runs this on the caller's path: an ``isinstance``
    against the ``Mapping`` ABC costs several times a ``type() is dict``)."""
    if _depth > 8:
        return 0
    t = type(value)
    if t is str:
        return len(value)
    if t is dict:
        n = 0
        for k, v in value.items():  # a message has few keys: walk them, not the text keys
            if k in _TEXT_SET:
                n += len(v) if type(v) is str else count_chars(v, _depth + 1)
        return n
    if t is list or t is tuple:
        n = 0
        for v in value:
            n += len(v) if type(v) is str else count_chars(v, _depth + 1)
        return n
    if isinstance(value, str):
        return len(value)
    if isinstance(value, Mapping):
        return sum(count_chars(value[k], _depth + 1) for k in _TEXT_KEYS if k in value)
    if isinstance(value, (list, tuple)):
        return sum(count_chars(v, _depth + 1) for v in value)
    fields = _fields(value)
    if fields is None:
        return 0
    n = 0
    for k, v in fields.items():
        if k in _TEXT_SET and v is not None:
            n += len(v) if type(v) is str else count_chars(v, _depth + 1)
    return n


@functools.lru_cache(maxsize=1)
def _encoder() -> Any:
    try:
        import tiktoken  # type: ignore[import-not-found,unused-ignore]

        return tiktoken.get_encoding("o200k_base")
    except Exception:  # not installed, or its files cannot be fetched offline
        return None


def _texts(value: Any, out: list[str], depth: int = 0) -> None:
    if depth > 8:
        return
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, Mapping):
        for k in _TEXT_KEYS:
            if k in value:
                _texts(value[k], out, depth + 1)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _texts(v, out, depth + 1)
    else:
        fields = _fields(value)
        if fields is not None:
            for k, v in fields.items():
                if k in _TEXT_SET and v is not None:
                    _texts(v, out, depth + 1)


def estimate_input_tokens(kwargs: Mapping[str, Any]) -> int:
    """Input tokens of a request, estimated from its text (no text is kept)."""
    enc = _encoder()
    if enc is not None:
        texts: list[str] = []
        for key in _TEXT_KEYS:
            if key in kwargs:
                _texts(kwargs[key], texts)
        try:
            return max(1, sum(len(enc.encode(t, disallowed_special=())) for t in texts))
        except Exception:
            pass
    return tokens_from_chars(sum(count_chars(kwargs[k]) for k in _TEXT_KEYS if k in kwargs))
