"""Fixtures of the hostile-peer tests: a gateway emulator and a mock LLM server per module, and
both reset (log, faults, usage tally) before each test that asks for ``servers``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from aerostack_meter.servers import start_gateway, start_mock_llm

from ._support import KEY


@pytest.fixture(scope="module")
def hostile_gateway() -> Iterator[Any]:
    gw = start_gateway(keys=[KEY])
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def hostile_llm() -> Iterator[Any]:
    handle = start_mock_llm()
    yield handle
    handle.stop()


@pytest.fixture
def servers(hostile_gateway: Any, hostile_llm: Any) -> tuple[Any, Any]:
    hostile_gateway.client.reset()
    hostile_gateway.client.clear_faults()
    hostile_llm.reset()
    return hostile_gateway, hostile_llm
