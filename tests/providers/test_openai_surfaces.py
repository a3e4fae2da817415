"""Every OpenAI surface, sync and async, streamed and not, plain and raw: metered once with the
exact usage the server returned, and what the user received is what an un-metered run returns."""

from __future__ import annotations

from typing import Any

import pytest

import aerostack_meter as am
from tests.conftest import billed

from ._openai_support import (
    MODES,
    SURFACES,
    Capture,
    Surface,
    available,
    client,
    clients,
    quick_gc,
    served_tokens,
)

__all__ = ["clients", "quick_gc"]  # fixtures


@pytest.fixture
def capture(meter_factory: Any) -> Capture:
    cap = Capture()
    meter_factory(default_consumer_id="default", before_send=cap, flush_interval=0.01)
    return cap


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("surface", SURFACES, ids=str)
async def test_metered_exactly_once_and_unchanged(surface: Surface, mode: str, mock_llm: Any,
                                                  gateway: Any, capture: Capture) -> None:
    metered = client(mock_llm, mode)
    if not available(surface, metered):
        pytest.skip(f"openai {am.__version__ and __import__('openai').__version__} has no {surface}")
    before = served_tokens(mock_llm)
    got = await surface.run(metered)
    served = served_tokens(mock_llm) - before
    assert served > 0

    assert billed(gateway) == {"default": served}
    [event] = capture.events
    assert (event.metric, event.units, event.provider, event.estimated) == ("tokens", served, "openai", False)
    assert event.model in ("gpt-mock", "emb-mock")
    stats = am.stats()
    assert (stats.calls_metered, stats.events_estimated, stats.usage_missing, stats.internal_errors) == (1, 0, 0, 0)

    am.uninstrument()
    assert await surface.run(client(mock_llm, mode)) == got
    assert am.stats().calls_metered == 1  # the un-metered run recorded nothing
