"""Where usage lives in AWS Bedrock runtime responses (``boto3`` ``bedrock-runtime``), normalised
(pure functions of the dicts botocore returns).

* ``converse``: ``usage`` = ``inputTokens`` (**without** the cache parts), ``outputTokens``,
  ``totalTokens`` (**with** them), ``cacheReadInputTokens``, ``cacheWriteInputTokens``.
  ``converse_stream``: the same ``usage`` in the final ``metadata`` event.
* ``invoke_model``: the ``x-amzn-bedrock-input-token-count`` / ``-output-token-count`` response
  headers (and ``-cache-read-`` / ``-cache-write-input-token-count``), read from
  ``ResponseMetadata.HTTPHeaders``: the body is a stream that can be read only once and is never
  touched. ``invoke_model_with_response_stream``: ``amazon-bedrock-invocationMetrics``
  (``inputTokenCount``, ``outputTokenCount``, ``cacheReadInputTokenCount``,
  ``cacheWriteInputTokenCount``) in the last chunk's JSON. The input counts there exclude the
  cache parts, as ``inputTokens`` does.

Normalised: ``input_tokens = input + cache read + cache write``, ``output_tokens = output``,
``total_tokens`` = ``totalTokens`` when sent, else input + output. Bedrock reports no reasoning
split (thinking is inside the output). Every number goes through :func:`to_count`: an invalid
required count makes the record ``None`` (usage missing, never billed).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .._usage import _EMPTY, _MAX_UNITS, Usage, to_count

__all__ = [
    "bytes_text_chars",
    "chunk_text_chars",
    "chunk_usage",
    "converse_event_chars",
    "converse_event_usage",
    "converse_usage",
    "header_usage",
    "metrics_usage",
    "without_usage",
]

_METRICS = "amazon-bedrock-invocationMetrics"
_HEADER = "x-amzn-bedrock-"


def _required(m: Mapping[str, Any], key: str) -> int | None:
    return to_count(m.get(key))


def _optional(m: Mapping[str, Any], key: str) -> int | None:
    """0 when absent; None when present but invalid."""
    raw = m.get(key)
    return 0 if raw is None else to_count(raw)


def _build(fresh: int | None, output: int | None, read: int | None, write: int | None,
           total: int | None, model: str | None, estimated: bool = False) -> Usage | None:
    if fresh is None or output is None or read is None or write is None:
        return None
    inp = fresh + read + write
    if not total:
        total = inp + output
    if to_count(total) is None:
        return None
    return Usage("bedrock", model, inp, output, total, cached_input_tokens=read,
                 cache_write_tokens=write, estimated=estimated)


def converse_usage(response: Any, model: str | None = None) -> Usage | None:
    """A ``converse`` response (or a ``converse_stream`` ``metadata`` event body): its ``usage``."""
    if response.__class__ is dict:  # what botocore returns: the common case in one pass
        u = response.get("usage")
        if u.__class__ is dict:
            usage = _dict_usage(u, model)
            if usage is not _GENERAL:
                return usage  # type: ignore[return-value]
    return _converse_usage(response, model)


_GENERAL = object()  # a value the one-pass reader leaves to the general one (not an int count)


def _dict_usage(u: dict[str, Any], model: str | None) -> object:
    """``usage`` whose counts are ints (or absent), with the rules of :func:`_converse_usage` and
    :func:`_build`; anything else: ``_GENERAL``."""
    fresh = u.get("inputTokens")
    output = u.get("outputTokens")
    read = u.get("cacheReadInputTokens")
    write = u.get("cacheWriteInputTokens")
    total = u.get("totalTokens")
    if type(fresh) is not int or type(output) is not int:
        return _GENERAL
    for n in (fresh, output, read, write, total):
        if n is not None and (type(n) is not int or not 0 <= n < _MAX_UNITS):
            return _GENERAL
    read = read or 0
    write = write or 0
    inp = fresh + read + write
    if not total:
        total = inp + output
        if total >= _MAX_UNITS:
            return None
    # positionally, in Usage's field order
    return Usage("bedrock", model, inp, output, total, read, write, 0, 0, 0, _EMPTY, None, False)


def _converse_usage(response: Any, model: str | None) -> Usage | None:
    if not isinstance(response, Mapping):
        return None
    u = response.get("usage")
    if not isinstance(u, Mapping):
        return None
    total = _optional(u, "totalTokens")
    if total is None:  # sent but not a count
        return None
    return _build(_required(u, "inputTokens"), _required(u, "outputTokens"),
                  _optional(u, "cacheReadInputTokens"), _optional(u, "cacheWriteInputTokens"),
                  total, model)


def converse_event_usage(event: Any, model: str | None = None) -> Usage | None:
    """One ``converse_stream`` event: usage only on ``metadata``."""
    if event.__class__ is not dict and not isinstance(event, Mapping):
        return None
    metadata = event.get("metadata")
    return converse_usage(metadata, model) if metadata is not None else None


def converse_event_chars(event: Any) -> int:
    if event.__class__ is not dict and not isinstance(event, Mapping):
        return 0
    block = event.get("contentBlockDelta")
    delta = block.get("delta") if block.__class__ is dict or isinstance(block, Mapping) else None
    if delta.__class__ is not dict and not isinstance(delta, Mapping):
        return 0
    text = delta.get("text")
    if isinstance(text, str):
        return len(text)
    reasoning = delta.get("reasoningContent")
    if isinstance(reasoning, Mapping) and isinstance(reasoning.get("text"), str):
        return len(reasoning["text"])
    return 0


def header_usage(response: Any, model: str | None = None) -> Usage | None:
    """An ``invoke_model`` response: the count headers (never the body)."""
    if response.__class__ is dict:  # what botocore returns: the common case in one pass
        meta = response.get("ResponseMetadata")
        headers = meta.get("HTTPHeaders") if meta.__class__ is dict else None
        if headers.__class__ is dict:
            return _dict_header_usage(headers, model)
    return _header_usage(response, model)


def _dict_header_usage(headers: dict[str, Any], model: str | None) -> Usage | None:
    """The count headers of a dict, with the rules of :func:`_header` and :func:`_build`."""
    fresh = headers.get(_INPUT)
    output = headers.get(_OUTPUT)
    if fresh is None or output is None:
        return None
    fresh = fresh.strip()
    output = output.strip()
    if not (fresh.isdigit() and output.isdigit() and len(fresh) < 16 and len(output) < 16):
        return None
    read = headers.get(_CACHE_READ)
    write = headers.get(_CACHE_WRITE)
    read = 0 if read is None else _header(headers, _CACHE_READ, False)
    write = 0 if write is None else _header(headers, _CACHE_WRITE, False)
    if read is None or write is None:
        return None
    output = int(output)
    inp = int(fresh) + read + write
    total = inp + output
    if total >= _MAX_UNITS:
        return None
    # positionally, in Usage's field order
    return Usage("bedrock", model, inp, output, total, read, write, 0, 0, 0, _EMPTY, None, False)


def _header_usage(response: Any, model: str | None) -> Usage | None:
    if not isinstance(response, Mapping):
        return None
    meta = response.get("ResponseMetadata")
    headers = meta.get("HTTPHeaders") if isinstance(meta, Mapping) else None
    if not isinstance(headers, Mapping):
        return None
    return _build(_header(headers, _INPUT, True), _header(headers, _OUTPUT, True),
                  _header(headers, _CACHE_READ, False), _header(headers, _CACHE_WRITE, False), None,
                  model)


_INPUT = _HEADER + "input-token-count"
_OUTPUT = _HEADER + "output-token-count"
_CACHE_READ = _HEADER + "cache-read-input-token-count"
_CACHE_WRITE = _HEADER + "cache-write-input-token-count"


def _header(headers: Mapping[str, Any], name: str, required: bool) -> int | None:
    """One count header: digits only (at most 15); absent: None if ``required``, else 0."""
    raw = headers.get(name)
    if raw is None:
        return None if required else 0
    raw = raw.strip()
    return int(raw) if raw.isdigit() and len(raw) < 16 else None


def metrics_usage(metrics: Any, model: str | None = None) -> Usage | None:
    """``amazon-bedrock-invocationMetrics`` as a normalised record."""
    if not isinstance(metrics, Mapping):
        return None
    return _build(_required(metrics, "inputTokenCount"), _required(metrics, "outputTokenCount"),
                  _optional(metrics, "cacheReadInputTokenCount"),
                  _optional(metrics, "cacheWriteInputTokenCount"), None, model)


_METRICS_BYTES = _METRICS.encode()
_scan_once = json.JSONDecoder().scan_once  # type: ignore[attr-defined]  # json.loads's C scanner


def _loads(raw: bytes | bytearray) -> Any:
    """``json.loads(raw)`` for one chunk's bytes (UTF-8 JSON, as Bedrock sends them)."""
    try:
        text = raw.decode()
        value, end = _scan_once(text, 0)
        if end == len(text):
            return value
    except (ValueError, StopIteration):
        pass
    return json.loads(raw)  # whitespace around the value, another encoding: the general way


def _chunk_json(event: Any) -> Any:
    chunk = event.get("chunk") if isinstance(event, Mapping) else None
    raw = chunk.get("bytes") if isinstance(chunk, Mapping) else None
    if not isinstance(raw, (bytes, bytearray)):
        return None
    try:
        return _loads(raw)
    except ValueError:
        return None


def chunk_usage(event: Any, model: str | None = None) -> Usage | None:
    """One ``invoke_model_with_response_stream`` event: usage only on the chunk that carries the
    invocation metrics (the last). The bytes are parsed only when they name them."""
    chunk = event.get("chunk") if isinstance(event, Mapping) else None
    raw = chunk.get("bytes") if isinstance(chunk, Mapping) else None
    if not isinstance(raw, (bytes, bytearray)) or _METRICS_BYTES not in raw:
        return None
    data = _chunk_json(event)
    return metrics_usage(data.get(_METRICS), model) if isinstance(data, Mapping) else None


def without_usage(event: Any) -> bytes | None:
    """The bytes of an ``invoke_model_with_response_stream`` chunk that cannot carry usage (the
    common case: every chunk but the last), else ``None``."""
    if event.__class__ is dict:
        chunk = event.get("chunk")
        raw = chunk.get("bytes") if chunk.__class__ is dict else None
        if raw.__class__ is bytes and _METRICS_BYTES not in raw:
            return raw
    return None


# Where the text of a streamed chunk lives, by model family (for early-end estimates only).
_TEXT_PATHS = (
    ("delta", "text"),  # Anthropic content_block_delta
    ("delta", "thinking"),
    ("generation",),  # Meta Llama
    ("outputText",),  # Amazon Titan
    ("text",),  # Cohere
    ("completion",),  # Anthropic text completions
    ("contentBlockDelta", "delta", "text"),  # Amazon Nova
    ("choices", 0, "delta", "content"),  # OpenAI-style (Mistral, DeepSeek, gpt-oss)
    ("outputs", 0, "text"),  # Mistral
)


# the same paths split into their first key and the rest (most events have none of the keys)
_TEXT_HEADS = tuple((path[0], path[1:]) for path in _TEXT_PATHS)


def _path(data: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        if data is None:
            return None
        if isinstance(step, int):
            data = data[step] if isinstance(data, list) and len(data) > step else None
        else:
            data = data.get(step) if data.__class__ is dict or isinstance(data, Mapping) else None
    return data


def chunk_text_chars(event: Any) -> int:
    """Output characters in one ``invoke_model_with_response_stream`` chunk."""
    return json_text_chars(_chunk_json(event))


def bytes_text_chars(raw: bytes) -> int:
    """Output characters in one chunk's bytes (see :func:`chunk_text_chars`)."""
    try:
        return json_text_chars(_loads(raw))
    except ValueError:
        return 0


def json_text_chars(data: Any) -> int:
    if data.__class__ is not dict and not isinstance(data, Mapping):
        return 0
    for head, rest in _TEXT_HEADS:
        value = data.get(head)
        if value is None:
            continue
        text = _path(value, rest) if rest else value
        if isinstance(text, str):
            return len(text)
    return 0
