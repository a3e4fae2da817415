"""AWS Bedrock runtime mock endpoints: converse, converse-stream, invoke and
invoke-with-response-stream (`/model/{modelId}/...`).

Shapes follow botocore's `bedrock-runtime` service model; streams use the AWS event-stream binary
framing (`_eventstream`). `invoke` answers a body with `messages` in the Anthropic-on-Bedrock shape
(the `anthropic` SDK's `AnthropicBedrock` client posts exactly that) and any other body in a
`prompt`/`generation` shape (Meta Llama's); both report the counts in the
`X-Amzn-Bedrock-Input-Token-Count` / `-Output-Token-Count` headers (and the cache-read/-write
headers when non-zero), and a stream's last chunk carries `amazon-bedrock-invocationMetrics`.
Input counts in headers and metrics exclude the cache parts, as `inputTokens` does in converse.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from . import _eventstream as es
from . import _mock_anthropic
from ._mock_plan import EVENT_STREAM, Frame, JsonPlan, RequestInfo, StreamPlan, split_chunks
from ._mock_usage import (
    Usage,
    anthropic_prompt,
    completion_prompt,
    hostile,
    put_usage,
    reply_words,
)

__all__ = [
    "converse",
    "converse_stream",
    "error_body",
    "error_headers",
    "invoke",
    "invoke_stream",
]

_ERRORS = {
    400: "ValidationException",
    403: "AccessDeniedException",
    404: "ResourceNotFoundException",
    408: "ModelTimeoutException",
    424: "ModelErrorException",
    429: "ThrottlingException",
    500: "InternalServerException",
    503: "ServiceUnavailableException",
}


def error_body(status: int, message: str) -> dict[str, Any]:
    return {"message": message}


def error_headers(status: int) -> list[tuple[bytes, bytes]]:
    """`x-amzn-ErrorType`, which botocore's rest-json parser reads for the error code."""
    kind = _ERRORS.get(status, "InternalServerException" if status >= 500 else "ValidationException")
    return [(b"x-amzn-errortype", f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/".encode())]


def _stream_error() -> bytes:
    return es.exception("modelStreamErrorException", "The model stream failed.")


def _max_tokens(body: Mapping[str, Any], *path: str) -> int | None:
    value: Any = body
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


# -- converse ------------------------------------------------------------------------------------


def _converse_answer(body: Mapping[str, Any], info: RequestInfo) -> tuple[list[str], str, Usage]:
    controls = info.controls
    prompt = anthropic_prompt(body)  # messages with content blocks plus a `system` block list
    limit = _max_tokens(body, "inferenceConfig", "maxTokens")
    visible = controls.output_tokens if limit is None else min(controls.output_tokens, limit)
    words = reply_words(prompt, visible)
    stop = "max_tokens" if limit is not None and limit < controls.output_tokens else "end_turn"
    return words, stop, Usage.build(prompt.tokens, len(words), controls)


def converse(body: Mapping[str, Any], info: RequestInfo) -> JsonPlan:
    words, stop, usage = _converse_answer(body, info)
    out: dict[str, Any] = {
        "output": {"message": {"role": "assistant", "content": [{"text": " ".join(words)}]}},
        "stopReason": stop,
        "metrics": {"latencyMs": 1},
    }
    put_usage(out, usage.bedrock_converse(), info.controls.usage)
    return JsonPlan(out, usage)


def converse_stream(body: Mapping[str, Any], info: RequestInfo) -> StreamPlan:
    words, stop, usage = _converse_answer(body, info)
    frames = [Frame(es.event("messageStart", {"role": "assistant"}))]
    frames += [
        Frame(es.event("contentBlockDelta", {"delta": {"text": piece}, "contentBlockIndex": 0}), delta=True)
        for piece in split_chunks(words, info.controls.chunks)
    ]
    frames.append(Frame(es.event("contentBlockStop", {"contentBlockIndex": 0})))
    frames.append(Frame(es.event("messageStop", {"stopReason": stop})))
    metadata: dict[str, Any] = {"metrics": {"latencyMs": 1}}
    put_usage(metadata, usage.bedrock_converse(), info.controls.usage)
    frames.append(Frame(es.event("metadata", metadata), tally=True))
    return StreamPlan(frames, _stream_error(), usage, content_type=EVENT_STREAM)


# -- invoke --------------------------------------------------------------------------------------


def _count_headers(usage: Usage, mode: str) -> list[tuple[bytes, bytes]]:
    counts = {
        "x-amzn-bedrock-input-token-count": usage.prompt - usage.cached - usage.cache_write,
        "x-amzn-bedrock-output-token-count": usage.output,
        "x-amzn-bedrock-cache-read-input-token-count": usage.cached,
        "x-amzn-bedrock-cache-write-input-token-count": usage.cache_write,
    }
    values = hostile(counts, mode)
    if not isinstance(values, dict):  # null / missing: no count headers
        return [(b"x-amzn-bedrock-invocation-latency", b"1")]
    out = [(b"x-amzn-bedrock-invocation-latency", b"1")]
    for name, value in values.items():
        if "cache" in name and not counts[name]:
            continue
        text = f'"{value}"' if isinstance(value, str) else str(value)
        out.append((name.encode(), text.encode()))
    return out


def _is_anthropic(body: Mapping[str, Any]) -> bool:
    return "messages" in body or "anthropic_version" in body


def _generic_answer(body: Mapping[str, Any], info: RequestInfo) -> tuple[list[str], str, Usage]:
    prompt = completion_prompt(body)
    limit = _max_tokens(body, "max_gen_len")
    controls = info.controls
    visible = controls.output_tokens if limit is None else min(controls.output_tokens, limit)
    words = reply_words(prompt, visible)
    stop = "length" if limit is not None and limit < controls.output_tokens else "stop"
    usage = replace(Usage.build(prompt.tokens, len(words), controls, cache_writes=False), cached=0)
    return words, stop, usage


def invoke(body: Mapping[str, Any], info: RequestInfo) -> JsonPlan:
    mode = info.controls.usage
    if _is_anthropic(body):
        answer = _mock_anthropic.reply({**body, "model": info.params["model"]}, info)
        return JsonPlan(answer.message, answer.usage, _count_headers(answer.usage, mode))
    words, stop, usage = _generic_answer(body, info)
    out: dict[str, Any] = {"generation": " ".join(words), "stop_reason": stop}
    counts = {"prompt_token_count": usage.prompt, "generation_token_count": usage.output}
    value = hostile(counts, mode)
    if isinstance(value, dict):
        out.update(value)
    return JsonPlan(out, usage, _count_headers(usage, mode))


def _with_metrics(data: dict[str, Any], usage: Usage, mode: str) -> dict[str, Any]:
    out = dict(data)
    put_usage(out, usage.bedrock_metrics(), mode, key="amazon-bedrock-invocationMetrics")
    return out


def invoke_stream(body: Mapping[str, Any], info: RequestInfo) -> StreamPlan:
    mode = info.controls.usage
    if _is_anthropic(body):
        answer = _mock_anthropic.reply({**body, "model": info.params["model"]}, info)
        events = answer.events
        frames = [Frame(es.chunk(data), delta=delta, tally=tally) for data, delta, tally in events[:-1]]
        last = _with_metrics(events[-1][0], answer.usage, mode)
        frames.append(Frame(es.chunk(last)))
        return StreamPlan(frames, _stream_error(), answer.usage, content_type=EVENT_STREAM)
    words, stop, usage = _generic_answer(body, info)
    frames = []
    seen = 0
    for i, piece in enumerate(split_chunks(words, info.controls.chunks)):
        seen += len(piece.split())
        data = {
            "generation": piece,
            "prompt_token_count": usage.prompt if i == 0 else None,
            "generation_token_count": seen,
            "stop_reason": None,
        }
        frames.append(Frame(es.chunk(data), delta=True))
    final = {"generation": "", "prompt_token_count": None, "generation_token_count": usage.output,
             "stop_reason": stop}
    frames.append(Frame(es.chunk(_with_metrics(final, usage, mode)), tally=True))
    return StreamPlan(frames, _stream_error(), usage, content_type=EVENT_STREAM)
