"""Fixtures for the servers suite: one gateway and one mock LLM per module, reset per test."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from aerostack_meter.servers import GatewayHandle, MockLLMHandle, start_gateway, start_mock_llm

from ._helpers import KEY


@pytest.fixture(scope="module")
def gateway_server() -> Iterator[GatewayHandle]:
    with start_gateway(keys=[KEY]) as handle:
        yield handle


@pytest.fixture
def gw(gateway_server: GatewayHandle) -> GatewayHandle:
    """The module's gateway with no faults, an empty log and zeroed stats."""
    gateway_server.client.set_faults()
    gateway_server.client.reset()
    return gateway_server


@pytest.fixture(scope="module")
def mock_server() -> Iterator[MockLLMHandle]:
    with start_mock_llm() as handle:
        yield handle


@pytest.fixture
def llm(mock_server: MockLLMHandle) -> MockLLMHandle:
    mock_server.reset()
    return mock_server


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5.0) as client:
        yield client
