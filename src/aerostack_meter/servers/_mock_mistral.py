"""Mistral mock endpoints: `POST /v1/chat/completions`, `/v1/fim/completions` and
`/v1/agents/completions` in Mistral's shapes (JSON and SSE).

Requests whose `User-Agent` names the `mistralai` SDK (`mistral-client-python/...`, or
Speakeasy's `... mistralai`) are answered here instead of the OpenAI
endpoint on the same path. Shapes follow the installed `mistralai` SDK's models
(`ChatCompletionResponse`, `CompletionEvent`/`CompletionChunk`, `UsageInfo`): a stream always
ends with a chunk carrying `finish_reason` and the usage (no `stream_options` needed), then
`data: [DONE]`. Usage: `prompt_tokens` (including `prompt_tokens_details.cached_tokens`),
`completion_tokens`, `total_tokens`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._mock_plan import Frame, JsonPlan, RequestInfo, StreamPlan, split_chunks, sse
from ._mock_usage import Prompt, Usage, cap, chat_prompt, put_usage, reply_words, words

__all__ = ["chat", "error_body", "fim"]

_TYPES = {400: "invalid_request_error", 401: "unauthorized", 404: "not_found", 429: "rate_limited"}


def error_body(status: int, message: str) -> dict[str, Any]:
    return {
        "object": "error",
        "message": message,
        "type": _TYPES.get(status, "internal_server_error"),
        "param": None,
        "code": str(status),
    }


def chat(body: Mapping[str, Any], info: RequestInfo) -> JsonPlan | StreamPlan:
    """`POST /v1/chat/completions` and `/v1/agents/completions` (an agent answers like chat)."""
    return _complete(body, info, chat_prompt(body))


def fim(body: Mapping[str, Any], info: RequestInfo) -> JsonPlan | StreamPlan:
    """`POST /v1/fim/completions`: the prompt is `prompt` and `suffix` (fill in the middle)."""
    text = " ".join(t for t in (body.get("prompt"), body.get("suffix")) if isinstance(t, str))
    return _complete(body, info, Prompt(words(text), text))


def _complete(body: Mapping[str, Any], info: RequestInfo, prompt: Prompt) -> JsonPlan | StreamPlan:
    controls = info.controls
    visible, capped = cap(body, controls.output_tokens, "max_tokens")
    words = reply_words(prompt, visible)
    # Mistral reports neither cache writes nor reasoning apart: reasoning is in completion_tokens.
    usage = Usage.build(prompt.tokens, len(words), controls, cache_writes=False)
    finish = "length" if capped else "stop"
    model = body.get("model") if isinstance(body.get("model"), str) else "mock-model"
    base = {"id": f"mistral-mock{info.seq}", "created": info.created, "model": model}
    reply = {"role": "assistant", "content": " ".join(words), "tool_calls": None, "prefix": False}
    if not body.get("stream"):
        choice = {"index": 0, "message": reply, "finish_reason": finish}
        out: dict[str, Any] = {**base, "object": "chat.completion", "choices": [choice]}
        put_usage(out, usage.mistral(), controls.usage)
        return JsonPlan(out, usage)

    def chunk(delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        return {**base, "object": "chat.completion.chunk", "choices": [choice]}

    frames = [Frame(sse(chunk({"role": "assistant", "content": ""}, None)))]
    frames += [
        Frame(sse(chunk({"content": piece}, None)), delta=True)
        for piece in split_chunks(words, controls.chunks)
    ]
    last = chunk({"content": ""}, finish)
    put_usage(last, usage.mistral(), controls.usage)
    frames.append(Frame(sse(last), tally=True))
    frames.append(Frame(sse("[DONE]")))
    return StreamPlan(frames, sse(error_body(500, "Service unavailable.")), usage)
