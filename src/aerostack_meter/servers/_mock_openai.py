"""OpenAI-compatible mock endpoints: chat completions, responses, legacy completions, embeddings.

Wire shapes follow the installed `openai` SDK's types and its SSE parser (`openai/_streaming.py`).
"""

from __future__ import annotations

import base64
import hashlib
import struct
from collections.abc import Callable, Mapping
from typing import Any

from ._mock_plan import Frame, JsonPlan, RequestInfo, StreamPlan, split_chunks, sse
from ._mock_usage import (
    Prompt,
    Usage,
    cap,
    chat_prompt,
    completion_prompt,
    put_usage,
    reply_words,
    responses_prompt,
)

__all__ = ["chat", "completions", "embeddings", "error_body", "responses"]

_ERROR_TYPES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "permission_denied"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


def error_body(status: int, message: str) -> dict[str, Any]:
    kind, code = _ERROR_TYPES.get(status, ("server_error", None))
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def _stream_error() -> bytes:
    return sse(error_body(500, "The server had an error while processing your request."))


def _model(body: Mapping[str, Any]) -> str:
    model = body.get("model")
    return model if isinstance(model, str) and model else "mock-model"


def _include_usage(body: Mapping[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _reply(
    body: Mapping[str, Any], prompt: Prompt, info: RequestInfo, *cap_keys: str
) -> tuple[list[str], bool]:
    visible, capped = cap(body, info.controls.output_tokens, *cap_keys)
    return reply_words(prompt, visible), capped


_Chunk = Callable[[list[dict[str, Any]]], dict[str, Any]]


def _chunker(base: Mapping[str, Any], include_usage: bool) -> _Chunk:
    """Builds a stream chunk around `choices`; with `include_usage` every chunk has `usage: null`."""

    def chunk(choices: list[dict[str, Any]]) -> dict[str, Any]:
        data = {**base, "choices": choices}
        if include_usage:
            data["usage"] = None
        return data

    return chunk


def _end_stream(
    frames: list[Frame], chunk: _Chunk, usage: Usage, mode: str, include_usage: bool
) -> StreamPlan:
    """Append the usage-only chunk (when asked for) and `[DONE]` to a chat-style stream."""
    if include_usage:
        final = chunk([])
        final.pop("usage", None)
        put_usage(final, usage.openai_chat(), mode)
        frames.append(Frame(sse(final), tally=True))
    frames.append(Frame(sse("[DONE]")))
    return StreamPlan(frames, _stream_error(), usage if include_usage else None)


# -- chat completions -----------------------------------------------------------------------------


def chat(body: Mapping[str, Any], info: RequestInfo) -> JsonPlan | StreamPlan:
    prompt = chat_prompt(body)
    words, capped = _reply(body, prompt, info, "max_completion_tokens", "max_tokens")
    usage = Usage.build(prompt.tokens, len(words), info.controls, cache_writes=False)  # chat reports none
    finish = "length" if capped else "stop"
    mode = info.controls.usage
    base = {
        "id": f"chatcmpl-mock{info.seq}",
        "created": info.created,
        "model": _model(body),
        "service_tier": info.controls.service_tier or "default",
        "system_fingerprint": "fp_mock",
    }
    if not body.get("stream"):
        out: dict[str, Any] = {
            **base,
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": " ".join(words),
                        "refusal": None,
                        "annotations": [],
                    },
                    "logprobs": None,
                    "finish_reason": finish,
                }
            ],
        }
        put_usage(out, usage.openai_chat(), mode)
        return JsonPlan(out, usage)

    include_usage = _include_usage(body)
    chunk = _chunker({**base, "object": "chat.completion.chunk"}, include_usage)

    def choice(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}

    frames = [Frame(sse(chunk([choice({"role": "assistant", "content": "", "refusal": None})])))]
    frames += [
        Frame(sse(chunk([choice({"content": piece})])), delta=True)
        for piece in split_chunks(words, info.controls.chunks)
    ]
    frames.append(Frame(sse(chunk([choice({}, finish)]))))
    return _end_stream(frames, chunk, usage, mode, include_usage)


# -- legacy completions ---------------------------------------------------------------------------


def completions(body: Mapping[str, Any], info: RequestInfo) -> JsonPlan | StreamPlan:
    prompt = completion_prompt(body)
    words, capped = _reply(body, prompt, info, "max_tokens")
    usage = Usage.build(prompt.tokens, len(words), info.controls, cache_writes=False)
    finish = "length" if capped else "stop"
    mode = info.controls.usage
    base = {
        "id": f"cmpl-mock{info.seq}",
        "object": "text_completion",
        "created": info.created,
        "model": _model(body),
        "system_fingerprint": "fp_mock",
    }

    def choice(text: str, finish_reason: str | None) -> dict[str, Any]:
        return {"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}

    if not body.get("stream"):
        out: dict[str, Any] = {**base, "choices": [choice(" ".join(words), finish)]}
        put_usage(out, usage.openai_chat(), mode)
        return JsonPlan(out, usage)

    include_usage = _include_usage(body)
    chunk = _chunker(base, include_usage)
    frames = [
        Frame(sse(chunk([choice(piece, None)])), delta=True)
        for piece in split_chunks(words, info.controls.chunks)
    ]
    frames.append(Frame(sse(chunk([choice("", finish)]))))
    return _end_stream(frames, chunk, usage, mode, include_usage)


# -- embeddings -----------------------------------------------------------------------------------


def _vector(text: str, dims: int) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    return [round((digest[i % len(digest)] - 128) / 128, 4) for i in range(dims)]


def _inputs(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        if value and all(isinstance(x, int) for x in value):
            return [" ".join(map(str, value))]
        return [
            x if isinstance(x, str) else " ".join(map(str, x))
            for x in value
            if isinstance(x, (str, list))
        ]
    return []


def embeddings(body: Mapping[str, Any], info: RequestInfo) -> JsonPlan:
    prompt = completion_prompt(body, key="input")
    usage = Usage(prompt.tokens, 0)
    dims = body.get("dimensions")
    dims = dims if isinstance(dims, int) and not isinstance(dims, bool) and 0 < dims <= 4096 else 8
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for index, text in enumerate(_inputs(body.get("input"))):
        vector = _vector(text, dims)
        embedding: Any = vector
        if as_base64:
            embedding = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    out: dict[str, Any] = {"object": "list", "data": data, "model": _model(body)}
    put_usage(out, usage.openai_embeddings(), info.controls.usage)
    return JsonPlan(out, usage)


# -- responses ------------------------------------------------------------------------------------


def responses(body: Mapping[str, Any], info: RequestInfo) -> JsonPlan | StreamPlan:
    prompt = responses_prompt(body)
    words, _capped = _reply(body, prompt, info, "max_output_tokens")
    usage = Usage.build(prompt.tokens, len(words), info.controls)
    text = " ".join(words)
    mode = info.controls.usage
    msg_id = f"msg_mock{info.seq}"
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    item_done = {
        "id": msg_id,
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [part],
    }

    def response(status: str, output: list[dict[str, Any]]) -> dict[str, Any]:
        instructions = body.get("instructions")
        return {
            "id": f"resp_mock{info.seq}",
            "object": "response",
            "created_at": info.created,
            "status": status,
            "background": False,
            "error": None,
            "incomplete_details": None,
            "instructions": instructions if isinstance(instructions, str) else None,
            "max_output_tokens": body.get("max_output_tokens"),
            "metadata": body.get("metadata") if isinstance(body.get("metadata"), dict) else {},
            "model": _model(body),
            "output": output,
            "parallel_tool_calls": True,
            "previous_response_id": None,
            "reasoning": {"effort": None, "summary": None},
            "service_tier": info.controls.service_tier or "default",
            "store": True,
            "temperature": 1.0,
            "text": {"format": {"type": "text"}, "verbosity": "medium"},
            "tool_choice": "auto",
            "tools": [],
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": None,
            "user": body.get("user") if isinstance(body.get("user"), str) else None,
        }

    if not body.get("stream"):
        out = response("completed", [item_done])
        del out["usage"]
        put_usage(out, usage.openai_responses(), mode)
        return JsonPlan(out, usage)

    seq = iter(range(1_000_000))

    def event(kind: str, **fields: Any) -> bytes:
        return sse({"type": kind, "sequence_number": next(seq), **fields}, event=kind)

    where = {"item_id": msg_id, "output_index": 0, "content_index": 0}
    frames = [
        Frame(event("response.created", response=response("in_progress", []))),
        Frame(event("response.in_progress", response=response("in_progress", []))),
        Frame(
            event(
                "response.output_item.added",
                output_index=0,
                item={
                    "id": msg_id,
                    "type": "message",
                    "status": "in_progress",
                    "role": "assistant",
                    "content": [],
                },
            )
        ),
        Frame(
            event(
                "response.content_part.added",
                **where,
                part={"type": "output_text", "text": "", "annotations": [], "logprobs": []},
            )
        ),
    ]
    frames += [
        Frame(event("response.output_text.delta", **where, delta=piece, logprobs=[]), delta=True)
        for piece in split_chunks(words, info.controls.chunks)
    ]
    frames.append(Frame(event("response.output_text.done", **where, text=text, logprobs=[])))
    frames.append(Frame(event("response.content_part.done", **where, part=part)))
    frames.append(Frame(event("response.output_item.done", output_index=0, item=item_done)))
    final = response("completed", [item_done])
    del final["usage"]
    put_usage(final, usage.openai_responses(), mode)
    frames.append(Frame(event("response.completed", response=final), tally=True))
    error = event("error", code="server_error", message="The server had an error.", param=None)
    return StreamPlan(frames, error, usage)
