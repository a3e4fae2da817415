"""The mock LLM server's ASGI app: provider endpoints (raw ASGI) and `/_mock/*` (Starlette)."""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import _mock_anthropic, _mock_bedrock, _mock_gemini, _mock_mistral, _mock_openai
from ._asgi import BodyTooLarge, header, read_body, send_json
from ._mock_plan import JsonPlan, RequestInfo, StreamPlan, next_seq
from ._mock_usage import ControlError, Controls, Tally
from ._runner import Closing, Receive, Scope, Send, mark_intentional_drop

__all__ = ["MockLLMApp"]

Handler = Callable[[Mapping[str, Any], RequestInfo], "JsonPlan | StreamPlan"]


def _no_headers(status: int) -> list[tuple[bytes, bytes]]:
    return []


@dataclass(frozen=True)
class _Endpoint:
    name: str
    handler: Handler
    error_body: Callable[[int, str], dict[str, Any]]
    error_headers: Callable[[int], list[tuple[bytes, bytes]]] = _no_headers


_ENDPOINTS = {
    "/v1/chat/completions": _Endpoint("openai.chat", _mock_openai.chat, _mock_openai.error_body),
    "/v1/responses": _Endpoint("openai.responses", _mock_openai.responses, _mock_openai.error_body),
    "/v1/completions": _Endpoint(
        "openai.completions", _mock_openai.completions, _mock_openai.error_body
    ),
    "/v1/embeddings": _Endpoint(
        "openai.embeddings", _mock_openai.embeddings, _mock_openai.error_body
    ),
    "/v1/messages": _Endpoint(
        "anthropic.messages", _mock_anthropic.messages, _mock_anthropic.error_body
    ),
    "/v1/messages/count_tokens": _Endpoint(
        "anthropic.count_tokens", _mock_anthropic.count_tokens, _mock_anthropic.error_body
    ),
    "/v1/fim/completions": _Endpoint("mistral.fim", _mock_mistral.fim, _mock_mistral.error_body),
    "/v1/agents/completions": _Endpoint("mistral.agents", _mock_mistral.chat, _mock_mistral.error_body),
}
_NOT_BILLED = {"anthropic.count_tokens", "gemini.count_tokens"}

_MISTRAL = _Endpoint("mistral.chat", _mock_mistral.chat, _mock_mistral.error_body)
_GEMINI = {
    "generateContent": _Endpoint("gemini.generate_content", _mock_gemini.generate, _mock_gemini.error_body),
    "streamGenerateContent": _Endpoint(
        "gemini.generate_content", _mock_gemini.stream_generate, _mock_gemini.error_body
    ),
    "countTokens": _Endpoint("gemini.count_tokens", _mock_gemini.count_tokens, _mock_gemini.error_body),
}
_BEDROCK = {
    op: _Endpoint(name, handler, _mock_bedrock.error_body, _mock_bedrock.error_headers)
    for op, name, handler in (
        ("converse", "bedrock.converse", _mock_bedrock.converse),
        ("converse-stream", "bedrock.converse", _mock_bedrock.converse_stream),
        ("invoke", "bedrock.invoke", _mock_bedrock.invoke),
        ("invoke-with-response-stream", "bedrock.invoke", _mock_bedrock.invoke_stream),
    )
}
# Gemini API (`/v1beta/models/M:generateContent`) and Vertex AI (`/v1beta1/projects/P/locations/L/
# publishers/google/models/M:...`, or without the project part in express mode).
_GEMINI_PATH = re.compile(
    r"/(?:v1|v1beta|v1alpha|v1beta1)/(?:(?:projects/[^/]+/locations/[^/]+/)?publishers/google/)?"
    r"models/(?P<model>[^/:]+):(?P<op>[A-Za-z]+)"
)
_BEDROCK_PATH = re.compile(r"/model/(?P<model>[^/]+)/(?P<op>[a-z-]+)")


def _is_mistral(user_agent: str) -> bool:
    """The `mistralai` SDK: `mistral-client-python/V` (its hooks) or Speakeasy's `... mistralai`."""
    return user_agent.startswith("mistral-client") or user_agent.endswith(" mistralai")


def _route(scope: Scope) -> tuple[_Endpoint, dict[str, str]] | None:
    """The endpoint for a request and its path parameters; None for the control app."""
    path = scope["path"].rstrip("/")
    endpoint = _ENDPOINTS.get(path)
    if endpoint is not None:
        if endpoint.name == "openai.chat" and _is_mistral(header(scope, b"user-agent") or ""):
            return _MISTRAL, {}
        return endpoint, {}
    match = _GEMINI_PATH.fullmatch(path)
    if match is not None and match["op"] in _GEMINI:
        return _GEMINI[match["op"]], {"model": match["model"]}
    match = _BEDROCK_PATH.fullmatch(path)
    if match is not None and match["op"] in _BEDROCK:
        return _BEDROCK[match["op"]], {"model": match["model"]}
    return None


def _consumer(controls: Controls, body: Mapping[str, Any]) -> str:
    if controls.consumer:
        return controls.consumer
    for key in ("user", "safety_identifier"):
        value = body.get(key)
        if isinstance(value, str) and value:
            return value
    for key in ("metadata", "requestMetadata"):  # Anthropic; Bedrock converse
        metadata = body.get(key)
        if isinstance(metadata, dict):
            value = metadata.get("user_id")
            if isinstance(value, str) and value:
                return value
    return "anonymous"


class MockLLMApp:
    def __init__(self, defaults: Controls, closing: Closing) -> None:
        defaults.validate()
        self.defaults = defaults
        self.closing = closing
        self.tally = Tally()
        self.stats: Counter[str] = Counter()
        self.by_endpoint: Counter[str] = Counter()
        self._control = Starlette(
            routes=[
                Route("/_mock/health", self._health, methods=["GET"]),
                Route("/_mock/usage", self._usage, methods=["GET"]),
                Route("/_mock/stats", self._stats, methods=["GET"]),
                Route("/_mock/reset", self._reset, methods=["POST"]),
            ]
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = _route(scope) if scope["type"] == "http" else None
        if route is None:
            if scope["type"] == "http" and scope["path"].startswith("/v1/"):
                body = _mock_openai.error_body(404, f"unknown endpoint {scope['path']}")
                await send_json(send, 404, body)
                return
            await self._control(scope, receive, send)
            return
        await self._serve(*route, scope, receive, send)

    async def _serve(
        self,
        endpoint: _Endpoint,
        params: dict[str, str],
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        self.stats["requests"] += 1
        self.by_endpoint[endpoint.name] += 1
        if scope["method"] != "POST":
            self.stats["bad_requests"] += 1
            await send_json(
                send, 405, endpoint.error_body(405, "method not allowed"), endpoint.error_headers(405)
            )
            return
        headers = {
            k.decode("latin-1"): v.decode("latin-1")
            for k, v in scope["headers"]
            if k.startswith(b"x-mock-")
        }
        try:
            controls = self.defaults.with_headers(headers)
            raw = await read_body(receive, limit=32 * 1024 * 1024)
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("body must be a JSON object")
        except (ControlError, ValueError, BodyTooLarge, UnicodeDecodeError) as exc:
            self.stats["bad_requests"] += 1
            await send_json(
                send, 400, endpoint.error_body(400, f"bad request: {exc}"), endpoint.error_headers(400)
            )
            return

        if controls.latency_ms > 0 and not await self.closing.sleep(controls.latency_ms / 1000):
            mark_intentional_drop()
            return
        if controls.error is not None:
            self.stats["errors"] += 1
            await send_json(
                send,
                controls.error,
                endpoint.error_body(controls.error, "mock error requested"),
                endpoint.error_headers(controls.error),
            )
            return

        info = RequestInfo(controls=controls, seq=next_seq(), params=params)
        plan = endpoint.handler(body, info)
        consumer = _consumer(controls, body)
        billed = controls.usage == "normal" and endpoint.name not in _NOT_BILLED
        if isinstance(plan, JsonPlan):
            await send_json(send, 200, plan.body, plan.headers)
            self.stats["ok"] += 1
            if billed and plan.usage is not None:
                self.tally.add(plan.usage, consumer=consumer, endpoint=endpoint.name)
            return
        self.stats["streams"] += 1
        await self._stream(
            plan, controls, receive, send, consumer if billed else None, endpoint.name
        )

    async def _stream(
        self,
        plan: StreamPlan,
        controls: Controls,
        receive: Receive,
        send: Send,
        consumer: str | None,
        endpoint: str,
    ) -> None:
        disconnected = asyncio.Event()

        async def watch() -> None:
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected.set()

        watcher = asyncio.create_task(watch())
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", plan.content_type),
                        (b"cache-control", b"no-cache"),
                    ],
                }
            )
            deltas = [i for i, frame in enumerate(plan.frames) if frame.delta]
            abort_at = _cut(deltas, controls.stream_error_after)
            error_at = _cut(deltas, controls.stream_error_event)
            delay = controls.chunk_delay_ms / 1000
            first_delta = True
            for index, frame in enumerate(plan.frames):
                if index == abort_at:
                    self.stats["aborted_streams"] += 1
                    mark_intentional_drop()
                    return
                if index == error_at:
                    self.stats["stream_error_events"] += 1
                    await send(
                        {"type": "http.response.body", "body": plan.error_frame, "more_body": True}
                    )
                    break
                if frame.delta and not first_delta and delay > 0:
                    if not await self.closing.sleep(delay):
                        mark_intentional_drop()
                        return
                else:  # let the loop see a client that left (no write to a closed socket after it)
                    await asyncio.sleep(0)
                if frame.delta:
                    first_delta = False
                if disconnected.is_set():
                    self.stats["client_disconnects"] += 1
                    return
                await send({"type": "http.response.body", "body": frame.data, "more_body": True})
                if frame.tally and consumer is not None and plan.usage is not None:
                    self.tally.add(plan.usage, consumer=consumer, endpoint=endpoint)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            self.stats["ok"] += 1
        finally:
            watcher.cancel()

    # -- control endpoints ----------------------------------------------------------------------

    async def _health(self, request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def _usage(self, request: Request) -> Response:
        return JSONResponse(self.tally.to_dict())

    async def _stats(self, request: Request) -> Response:
        keys = (
            "requests",
            "ok",
            "errors",
            "bad_requests",
            "streams",
            "aborted_streams",
            "stream_error_events",
            "client_disconnects",
        )
        out: dict[str, Any] = {k: self.stats.get(k, 0) for k in keys}
        out["by_endpoint"] = dict(sorted(self.by_endpoint.items()))
        out["usage"] = self.tally.to_dict()
        return JSONResponse(out)

    async def _reset(self, request: Request) -> Response:
        self.tally = Tally()
        self.stats.clear()
        self.by_endpoint.clear()
        return JSONResponse({"ok": True})


def _cut(deltas: list[int], k: int | None) -> int | None:
    """The frame index at which to cut a stream after `k` content chunks: before the (k+1)-th
    chunk, or right after the last one when there are no more than `k`."""
    if k is None or not deltas:
        return None
    if k == 0:
        return deltas[0]
    return deltas[min(k, len(deltas)) - 1] + 1
