"""Local servers for tests, the demo and benchmarks: the gateway emulator and a mock LLM.

The servers need the `servers` extra (starlette, uvicorn). Their names load on first use, so the
modules here that need only httpx (the gateway client, the dashboard's gateway source behind
`aerostack-meter report --gateway`) work on the core install.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names as _lazy_names

if TYPE_CHECKING:
    from ._gateway_client import GatewayClient
    from .gateway import GatewayHandle, start_gateway
    from .mock_llm import MockLLMHandle, start_mock_llm

__all__ = ["GatewayClient", "GatewayHandle", "MockLLMHandle", "start_gateway", "start_mock_llm"]

_WHERE = {
    "GatewayClient": "._gateway_client",
    "GatewayHandle": ".gateway",
    "start_gateway": ".gateway",
    "MockLLMHandle": ".mock_llm",
    "start_mock_llm": ".mock_llm",
}


__getattr__, __dir__ = _lazy_names(globals(), _WHERE)
