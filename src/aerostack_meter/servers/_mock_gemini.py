"""Google Gemini mock endpoints (Gemini API and Vertex AI): generateContent, its SSE stream, and
countTokens.

Wire shapes follow the installed `google-genai` SDK (`google/genai/models.py` converters and the
SSE reader in `_api_client.py`: `data:` lines, a chunk starting `{"error":` raises). Stream chunks
carry the usage so far (cumulative: `candidatesTokenCount` grows); a last chunk with no text
carries the finish reason and the final usage.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from ._mock_plan import Frame, JsonPlan, RequestInfo, StreamPlan, split_chunks, sse
from ._mock_usage import Usage, gemini_prompt, put_usage, reply_words

__all__ = ["count_tokens", "error_body", "generate", "stream_generate"]

_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def error_body(status: int, message: str) -> dict[str, Any]:
    return {"error": {"code": status, "message": message, "status": _STATUS.get(status, "UNKNOWN")}}


def _max_output(body: Mapping[str, Any]) -> int | None:
    config = body.get("generationConfig", body.get("generation_config"))
    if isinstance(config, dict):
        value = config.get("maxOutputTokens", config.get("max_output_tokens"))
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def _answer(body: Mapping[str, Any], info: RequestInfo) -> tuple[list[str], bool, Usage, str]:
    controls = info.controls
    prompt = gemini_prompt(body)
    limit = _max_output(body)
    visible = controls.output_tokens if limit is None else min(controls.output_tokens, limit)
    words = reply_words(prompt, visible)
    # Gemini has no cache writes (explicit caches are created apart); tool-use prompt tokens are
    # input reported outside promptTokenCount.
    usage = replace(
        Usage.build(prompt.tokens, len(words), controls, cache_writes=False),
        tool_use_prompt=controls.tool_use_prompt,
    )
    return words, limit is not None and limit < controls.output_tokens, usage, info.params["model"]


def _response(info: RequestInfo, model: str, text: str, finish: str | None) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
    if finish is not None:
        candidate["finishReason"] = finish
    return {
        "candidates": [candidate],
        "modelVersion": model,
        "responseId": f"gemini-mock{info.seq}",
    }


def _function_to_call(body: Mapping[str, Any]) -> str | None:
    """The first declared function, when the model should call it: the request declares functions
    and its last turn is not a function response (automatic function calling then answers it)."""
    names = [d.get("name") for tool in body.get("tools") or [] if isinstance(tool, dict)
             for d in tool.get("functionDeclarations") or [] if isinstance(d, dict)]
    contents = body.get("contents") or []
    last = contents[-1] if isinstance(contents, list) and contents else {}
    parts = last.get("parts") if isinstance(last, dict) else None
    answered = any(isinstance(p, dict) and "functionResponse" in p for p in parts or [])
    return names[0] if names and isinstance(names[0], str) and not answered else None


def generate(body: Mapping[str, Any], info: RequestInfo) -> JsonPlan:
    words, capped, usage, model = _answer(body, info)
    function = _function_to_call(body)
    if function is not None:  # a function call of 3 output tokens instead of text
        usage = replace(usage, visible=3)
        out = _response(info, model, "", "STOP")
        out["candidates"][0]["content"]["parts"] = [{"functionCall": {"name": function, "args": {}}}]
        put_usage(out, usage.gemini(), info.controls.usage, key="usageMetadata")
        return JsonPlan(out, usage)
    out = _response(info, model, " ".join(words), "MAX_TOKENS" if capped else "STOP")
    put_usage(out, usage.gemini(), info.controls.usage, key="usageMetadata")
    return JsonPlan(out, usage)


def stream_generate(body: Mapping[str, Any], info: RequestInfo) -> StreamPlan:
    words, capped, usage, model = _answer(body, info)
    mode = info.controls.usage
    pieces = split_chunks(words, info.controls.chunks)
    frames: list[Frame] = []
    seen = 0
    for piece in pieces:
        seen += len(piece.split())
        chunk = _response(info, model, piece, None)
        put_usage(chunk, usage.gemini(visible=seen), mode, key="usageMetadata")
        frames.append(Frame(sse(chunk), delta=True))
    # The last chunk: no text, the finish reason and the final usage.
    final = _response(info, model, "", "MAX_TOKENS" if capped else "STOP")
    put_usage(final, usage.gemini(), mode, key="usageMetadata")
    frames.append(Frame(sse(final), tally=True))
    return StreamPlan(frames, sse(error_body(500, "Internal error encountered.")), usage)


def count_tokens(body: Mapping[str, Any], info: RequestInfo) -> JsonPlan:
    return JsonPlan({"totalTokens": gemini_prompt(body).tokens})
