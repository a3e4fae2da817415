"""Local servers for tests, the demo and benchmarks: the gateway emulator and a mock LLM.

The servers need the `servers` extra (starlette, uvicorn). Their names load on first use, so the
modules here that need only httpx (the gateway client, the dashboard's gateway source behind
`aerostack-meter report --gateway`) work on the core install.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
