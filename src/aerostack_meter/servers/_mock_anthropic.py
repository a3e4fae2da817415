"""Anthropic-compatible mock endpoints: messages (JSON and SSE) and messages/count_tokens.

Wire shapes follow the installed `anthropic` SDK's types and its SSE parser
(`anthropic/_streaming.py`: `ping` is skipped, `error` raises, data needs an `event:` line).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._mock_plan import Frame, JsonPlan, RequestInfo, StreamPlan, split_chunks, sse
from ._mock_usage import Usage, anthropic_prompt, cap, put_usage, reply_words

__all__ = ["Reply", "count_tokens", "error_body", "messages", "reply"]

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_body(status: int, message: str) -> dict[str, Any]:
    kind = _ERROR_TYPES.get(status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_mock"}


def _model(body: Mapping[str, Any]) -> str:
    model = body.get("model")
    return model if isinstance(model, str) and model else "mock-model"


def count_tokens(body: Mapping[str, Any], info: RequestInfo) -> JsonPlan:
    return JsonPlan({"input_tokens": anthropic_prompt(body).tokens})


@dataclass
class Reply:
    """One messages answer as data: the JSON ``message`` (with usage) and the stream's events
    (``(event, is_content_delta, delivers_usage)``), for the SSE endpoint and Bedrock's invoke."""

    message: dict[str, Any]
    events: list[tuple[dict[str, Any], bool, bool]]
    usage: Usage


def reply(body: Mapping[str, Any], info: RequestInfo) -> Reply:
    controls = info.controls
    prompt = anthropic_prompt(body)
    visible, capped = cap(body, controls.output_tokens, "max_tokens")
    words = reply_words(prompt, visible)
    usage = Usage.build(prompt.tokens, len(words), controls)
    stop_reason = "max_tokens" if capped else "end_turn"
    message: dict[str, Any] = {
        "id": f"msg_mock{info.seq}",
        "type": "message",
        "role": "assistant",
        "model": _model(body),
        "content": [{"type": "text", "text": " ".join(words)}],
        "stop_reason": stop_reason,
        "stop_sequence": None,
    }
    start = {**message, "content": [], "stop_reason": None}
    put_usage(start, usage.anthropic(output_tokens=1), controls.usage)
    put_usage(message, usage.anthropic(), controls.usage)
    events: list[tuple[dict[str, Any], bool, bool]] = [
        ({"type": "message_start", "message": start}, False, False),
        ({"type": "ping"}, False, False),
        (
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            False,
            False,
        ),
    ]
    events += [
        (
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}},
            True,
            False,
        )
        for piece in split_chunks(words, controls.chunks)
    ]
    events.append(({"type": "content_block_stop", "index": 0}, False, False))
    total = usage.output
    # x-mock-repeat-deltas: running cumulative totals, then the final total once more.
    outputs = (
        [-(-total * i // 3) for i in (1, 2, 3)] + [total] if controls.repeat_deltas else [total]
    )
    for i, out in enumerate(outputs):
        delta: dict[str, Any] = {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": None},
        }
        put_usage(delta, usage.anthropic_delta(out), controls.usage)
        events.append((delta, False, i == len(outputs) - 1))
    events.append(({"type": "message_stop"}, False, False))
    return Reply(message, events, usage)


def messages(body: Mapping[str, Any], info: RequestInfo) -> JsonPlan | StreamPlan:
    answer = reply(body, info)
    if not body.get("stream"):
        return JsonPlan(answer.message, answer.usage)
    frames = [
        Frame(sse(data, data["type"]), delta=delta, tally=tally)
        for data, delta, tally in answer.events
    ]
    error = sse(
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, "error"
    )
    return StreamPlan(frames, error, answer.usage)
