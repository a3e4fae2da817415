"""A mock LLM server with deterministic usage: the OpenAI, Anthropic, Gemini (API and Vertex AI),
Bedrock runtime and Mistral wire formats.

    with start_mock_llm() as llm:
        openai.OpenAI(base_url=llm.url, api_key="x")                    # .../v1
        anthropic.Anthropic(base_url=llm.anthropic_base_url, api_key="x")  # the root, no /v1
        genai.Client(api_key="x", http_options=types.HttpOptions(base_url=llm.base_url))
        boto3.client("bedrock-runtime", endpoint_url=llm.base_url, ...)  # dummy credentials
        Mistral(api_key="x", server_url=llm.base_url)
        llm.usage()["by_consumer"]

The usage formula, the `x-mock-*` headers and the `/_mock/*` endpoints are in docs/servers.md.
"""

from __future__ import annotations

from typing import Any

import httpx

from ._mock_app import MockLLMApp
from ._mock_usage import Controls
from ._runner import Closing, ServerHandle, ServerThread

__all__ = ["MockLLMHandle", "start_mock_llm"]


class MockLLMHandle(ServerHandle):
    """A running mock LLM server. `url` is the base URL for `openai.OpenAI(base_url=...)`
    (it ends in `/v1`)."""

    def __init__(self, app: MockLLMApp, server: ServerThread, host: str) -> None:
        self.app = app
        self._server = server
        self._host = host
        self.port = server.port
        self._http = httpx.Client(base_url=self.base_url, timeout=10.0)

    @property
    def anthropic_base_url(self) -> str:
        """Base URL for `anthropic.Anthropic(base_url=...)` (the SDK adds `/v1/...` itself)."""
        return self.base_url

    def usage(self) -> dict[str, Any]:
        """Usage returned with status 200 in normal mode: `total`, `by_consumer`, `by_endpoint`."""
        response = self._http.get("/_mock/usage")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def stats(self) -> dict[str, Any]:
        """Request counters by outcome and endpoint, plus `usage`."""
        response = self._http.get("/_mock/stats")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    def reset(self) -> None:
        self._http.post("/_mock/reset").raise_for_status()

    def stop(self) -> None:
        self._stop_server()
        self._http.close()


def start_mock_llm(
    *,
    port: int = 0,
    latency_ms: float = 0,
    chunk_delay_ms: float = 0,
    host: str = "127.0.0.1",
    **defaults: Any,
) -> MockLLMHandle:
    """Start the mock LLM server in a background thread.

    `latency_ms` delays each response, `chunk_delay_ms` each streamed content chunk. Other
    keyword arguments set server-wide defaults for the `x-mock-*` controls, by their field
    names: `cache`, `cache_write`, `reasoning`, `web_search`, `tool_use_prompt`, `error`, `chunks`,
    `output_tokens` (reply length, default 10), `usage`, `repeat_deltas`,
    `stream_error_after`, `stream_error_event`, `consumer`. Headers override them per request.
    """
    try:
        controls = Controls(
            latency_ms=float(latency_ms), chunk_delay_ms=float(chunk_delay_ms), **defaults
        )
    except TypeError as exc:
        raise TypeError(f"start_mock_llm: {exc}") from None
    closing = Closing()
    app = MockLLMApp(controls, closing)
    server = ServerThread(
        app, host=host, port=port, closing=closing, name="aerostack-mock-llm"
    ).start()
    return MockLLMHandle(app, server, host)
