"""aerostack_meter.testing.capture_usage with a real SDK call against the mock LLM server."""

from __future__ import annotations

from typing import Any

import openai

import aerostack_meter as am
from aerostack_meter.testing import capture_usage


def test_capture_usage_records_real_calls_and_restores_the_previous_meter(mock_llm: Any) -> None:
    before = am.get_meter()
    client = openai.OpenAI(base_url=mock_llm.url, api_key="x", max_retries=0)
    try:
        with capture_usage() as usage:
            with am.consumer("usr_1"):
                reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi there"}])
            am.log("usr_2", 3, metric="images")
        assert usage.totals("tokens") == {"usr_1": reply.usage.total_tokens}
        assert usage.totals() == {"usr_1": reply.usage.total_tokens, "usr_2": 3}
        assert {e.metric for e in usage.events} == {"tokens", "images"}
        assert sum(b.units for b in usage.sink.batches) == reply.usage.total_tokens + 3
    finally:
        am.uninstrument()
    assert am.get_meter() is before


def test_capture_usage_reads_the_api_id_as_init_does(monkeypatch: Any) -> None:
    monkeypatch.setenv("AEROSTACK_API_ID", "api_from_env")
    try:
        with capture_usage() as usage:
            am.log("usr_env", 2)
        assert [e.api_id for e in usage.events] == ["api_from_env"]
        with capture_usage(api_id="api_given") as usage:
            am.log("usr_arg", 2)
        assert [e.api_id for e in usage.events] == ["api_given"]
        monkeypatch.delenv("AEROSTACK_API_ID")
        with capture_usage() as usage:
            am.log("usr_none", 2)
        assert [e.api_id for e in usage.events] == ["api_test"]
    finally:
        am.uninstrument()
