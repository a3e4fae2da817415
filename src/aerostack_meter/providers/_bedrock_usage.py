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
import re
from collections.abc import Mapping
from typing import Any

from .._usage import _EMPTY, Usage, to_count, usage_of

__all__ = [
    "bytes_text_chars",
    "chunk_reading",
    "chunk_text_chars",
    "chunk_usage",
    "converse_event_chars",
    "converse_event_usage",
    "converse_usage",
    "header_usage",
    "metrics_usage",
    "quick_chunk_chars",
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
    """A ``converse`` response (or a ``converse_stream`` ``metadata`` event body): its ``usage``.

    What botocore returns (dicts, every count an int) is read in this one frame, by subscripts
    (no method call per field) and one range check of all the counts at once; anything else takes
    :func:`_converse_usage`, whose rules are the same."""
    if response.__class__ is dict:
        u = response.get("usage")
        if u.__class__ is dict:
            try:
                fresh = u["inputTokens"]
                output = u["outputTokens"]
                total = u["totalTokens"]
            except KeyError:  # no total: the general rules compute it
                return _converse_usage(response, model)
            read: Any = 0
            write: Any = 0
            if _CACHE_READ_KEY in u or _CACHE_WRITE_KEY in u:  # prompt caching: None counts as absent
                read = u.get(_CACHE_READ_KEY)
                write = u.get(_CACHE_WRITE_KEY)
                if read is None:
                    read = 0
                if write is None:
                    write = 0
            # ints only (a bool is not one), each in [0, 2**53): one OR and one shift for the range
            if (type(fresh) is int and type(output) is int and type(total) is int and type(read) is int
                    and type(write) is int and not (fresh | output | total | read | write) >> _BITS):
                inp = fresh + read + write
                if not total:
                    total = inp + output
                    if total >> _BITS:
                        return None
                return usage_of(("bedrock", model, inp, output, total, read, write, 0, 0, 0, _EMPTY, None,
                                 False, 0, None))
    return _converse_usage(response, model)


_CACHE_READ_KEY = "cacheReadInputTokens"
_CACHE_WRITE_KEY = "cacheWriteInputTokens"
_BITS = 53  # a count is below 2**53 (_MAX_UNITS): ``n >> 53`` is 0 for every count, not for a negative


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
    """An ``invoke_model`` response: the count headers (never the body).

    The common case (botocore's dicts, no cache headers, plain digits) is read in this one frame;
    anything else takes :func:`_header_usage`, whose rules are the same."""
    if response.__class__ is dict:
        meta = response.get("ResponseMetadata")
        headers = meta.get("HTTPHeaders") if meta.__class__ is dict else None
        if headers.__class__ is dict:
            fresh = headers.get(_INPUT)
            output = headers.get(_OUTPUT)
            if (fresh.__class__ is str and output.__class__ is str and fresh.isdecimal()
                    and output.isdecimal() and len(fresh) < 16 and len(output) < 16
                    and _CACHE_READ not in headers and _CACHE_WRITE not in headers):
                inp = int(fresh)
                out = int(output)  # under 10**15 each: their sum is a count (< 2**53)
                return usage_of(("bedrock", model, inp, out, inp + out, 0, 0, 0, 0, 0, _EMPTY, None, False,
                                 0, None))
    return _header_usage(response, model)


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
    if not isinstance(raw, str):
        return None
    raw = raw.strip()
    return int(raw) if raw.isdecimal() and len(raw) < 16 else None


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


def chunk_reading(event: Any, model: str | None = None) -> tuple[Usage | None, int]:
    """One ``invoke_model_with_response_stream`` event's usage and output characters from one
    parse of its bytes: ``(chunk_usage(event, model), chunk_text_chars(event))``, for the chunks
    :func:`quick_chunk_chars` leaves (the last one names the invocation metrics: parsed once, not
    once per reader)."""
    chunk = event.get("chunk") if isinstance(event, Mapping) else None
    raw = chunk.get("bytes") if isinstance(chunk, Mapping) else None
    if not isinstance(raw, (bytes, bytearray)):
        return None, 0
    try:
        data = _loads(raw)
    except ValueError:
        return None, 0
    if _METRICS_BYTES in raw and isinstance(data, Mapping):
        return metrics_usage(data.get(_METRICS), model), json_text_chars(data)
    return None, json_text_chars(data)


def quick_chunk_chars(event: dict[str, Any]) -> int | None:
    """The output characters of an ``invoke_model_with_response_stream`` chunk that cannot carry
    usage (every chunk but the last), read in as few steps as the chunk allows; ``None`` for any
    other event (the general readers, :func:`chunk_usage` and :func:`chunk_text_chars`, take it).

    Equal to :func:`chunk_text_chars` on every chunk it answers. The common chunk, Anthropic's
    text (or thinking) delta as Bedrock sends it (compact JSON), is matched by its prefix and its
    end, and only its string is decoded (``json``'s C ``scanstring``: ~3 k instructions against
    ~15 k for parsing the whole object and looking for the text in it); any other chunk is parsed
    whole."""
    chunk = event.get("chunk")
    raw = chunk.get("bytes") if chunk.__class__ is dict else None
    if raw.__class__ is not bytes:
        return None
    if raw.startswith(_TEXT_DELTA_0):  # the first content block's text: the commonest chunk
        at = len(_TEXT_DELTA_0)
    else:
        match = _DELTA(raw)
        at = match.end() if match is not None else 0
    if at:
        try:
            text = raw.decode()
            value, end = _scanstring(text, at)  # the prefix is ASCII: bytes and characters align
        except ValueError:  # not UTF-8, not a JSON string: parsed whole below
            pass
        else:
            if end == len(text) - 2 and raw.endswith(b"}}"):
                return len(value)
    if _METRICS_BYTES in raw:
        return None
    return bytes_text_chars(raw)


# Anthropic's content_block_delta chunk, up to its text's opening quote; then the text and '}}'
_TEXT_DELTA_0 = b'{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"'
_DELTA = re.compile(rb'\{"type":"content_block_delta","index":(?:0|[1-9][0-9]{0,8}),"delta":\{"type":'
                    rb'"(?:text_delta","text|thinking_delta","thinking)":"').match
_scanstring = json.decoder.scanstring  # type: ignore[attr-defined]  # the C one where built


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
