"""Every OpenAI surface, sync and async, streamed and not, plain and raw: metered once with the
exact usage the server returned, and what the user received is what an un-metered run returns."""

from __future__ import annotations

from typing import Any

import pytest

import aerostack_meter as am
from tests.conftest import billed

from ._openai_support import (
    HX,
    MODES,
    SURFACES,
    Capture,
    Surface,
    available,
    client,
    clients,
    quick_gc,
    resolve,
    served_tokens,
)

__all__ = ["clients", "quick_gc"]  # fixtures


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
    if surface.estimated:  # sent as written: the server reported nothing, the stream is estimated
        assert served == 0
        units = billed(gateway)["default"]
        assert units > 0
    else:
        assert served > 0
        assert billed(gateway) == {"default": served}
        units = served
    [event] = capture.events
    assert (event.metric, event.units, event.provider, event.estimated) == (
        "tokens", units, "openai", surface.estimated)
    assert event.model in ("gpt-mock", "emb-mock")
    stats = am.stats()
    assert (stats.calls_metered, stats.events_estimated, stats.usage_missing, stats.internal_errors) == (
        1, int(surface.estimated), 0, 0)

    am.uninstrument()
    assert await surface.run(client(mock_llm, mode)) == got
    assert am.stats().calls_metered == 1  # the un-metered run recorded nothing


@pytest.mark.parametrize("mode", MODES)
async def test_beta_responses_create_is_metered(mode: str, mock_llm: Any, gateway: Any, capture: Capture) -> None:
    c = client(mock_llm, mode)
    if not hasattr(c.beta, "responses"):
        pytest.skip(f"openai {__import__('openai').__version__} has no beta.responses")
    before = served_tokens(mock_llm)
    r = await resolve(c.beta.responses.create(model="gpt-mock", input="hello harbour town"))
    assert r.usage.total_tokens == served_tokens(mock_llm) - before
    assert billed(gateway) == {"default": r.usage.total_tokens}


@pytest.mark.parametrize("mode", MODES)
async def test_responses_compact_is_metered(mode: str, mock_llm: Any, gateway: Any, capture: Capture) -> None:
    usage = {"input_tokens": 40, "input_tokens_details": {"cached_tokens": 8}, "output_tokens": 6,
             "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 46}
    body = {"id": "cmp_1", "object": "response.compaction", "created_at": 1, "output": [], "usage": usage}

    def handler(request: Any) -> Any:
        assert request.url.path.endswith("/responses/compact")
        return HX.Response(200, json=body)

    transport = HX.MockTransport(handler)
    http = HX.AsyncClient(transport=transport) if mode == "async" else HX.Client(transport=transport)
    c = client(mock_llm, mode, base_url="http://in-process.test/v1", http_client=http)
    if not hasattr(getattr(c, "responses", None), "compact"):
        pytest.skip(f"openai {__import__('openai').__version__} has no responses.compact")
    r = await resolve(c.responses.compact(model="gpt-mock", input="a long conversation"))
    assert r.usage.total_tokens == 46
    assert billed(gateway) == {"default": 46}
    [event] = capture.events
    assert event.response_id == "cmp_1"
