"""Local servers for tests, the demo and benchmarks: the gateway emulator and a mock LLM.

Needs the `servers` extra (starlette, uvicorn).
"""

from ._gateway_client import GatewayClient
from .gateway import GatewayHandle, start_gateway
from .mock_llm import MockLLMHandle, start_mock_llm

__all__ = ["GatewayClient", "GatewayHandle", "MockLLMHandle", "start_gateway", "start_mock_llm"]
