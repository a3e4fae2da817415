"""A call with no consumer is never lost silently: ``on_missing_consumer`` = warn | raise | ignore."""

from __future__ import annotations

import logging
from typing import Any

import openai
import pytest

import aerostack_meter as am

from ._helpers import MODEL, chat, prompt, rows


@pytest.fixture
def client(mock_llm: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=mock_llm.url, api_key="x")


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "aerostack_meter" and r.levelno == logging.WARNING and "has no consumer" in r.getMessage()]


def test_warn_without_default_drops_counts_and_logs_once_per_call_site(
        meter_factory: Any, gateway: Any, client: openai.OpenAI, caplog_meter: pytest.LogCaptureFixture) -> None:
    meter = meter_factory()  # on_missing_consumer="warn" is the default
    for _ in range(3):  # the call itself works
        assert client.chat.completions.create(model=MODEL, messages=prompt(2)).usage is not None
    client.chat.completions.create(model=MODEL, messages=prompt(2))  # a second call site
    with am.consumer("someone"):
        units = chat(client)
    assert rows(gateway) == {("someone", "api_test", "tokens"): units}
    assert meter.stats().missing_consumer == 4
    logged = _warnings(caplog_meter)
    assert len(logged) == 2, logged
    assert all(__file__ in msg for msg in logged)  # the message names the user's call site


def test_warn_with_default_bills_the_default(meter: am.Meter, gateway: Any, client: openai.OpenAI,
                                             caplog_meter: pytest.LogCaptureFixture) -> None:
    units = chat(client)
    assert rows(gateway) == {("default", "api_test", "tokens"): units}
    assert meter.stats().missing_consumer == 0
    assert _warnings(caplog_meter) == []


def test_a_missing_api_id_is_missing_attribution_too(meter_factory: Any, gateway: Any,
                                                     client: openai.OpenAI, monkeypatch: pytest.MonkeyPatch,
                                                     caplog_meter: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("AEROSTACK_API_ID", raising=False)
    meter = meter_factory(api_id=None, default_consumer_id="u")
    chat(client)
    chat(client)
    assert rows(gateway) == {}
    assert meter.stats().missing_consumer == 2
    said = [r.getMessage() for r in caplog_meter.records
            if r.name == "aerostack_meter" and r.levelno == logging.WARNING]
    assert len(said) == 1, said  # a missing setting is said once, with the right fix
    assert "no API id configured" in said[0] and "AEROSTACK_API_ID" in said[0]
    assert "consumer(" not in said[0]


async def test_raise_stops_the_request_before_it_is_sent(meter_factory: Any, gateway: Any,
                                                         client: openai.OpenAI, mock_llm: Any) -> None:
    meter = meter_factory(on_missing_consumer="raise")
    aclient = openai.AsyncOpenAI(base_url=mock_llm.url, api_key="x")
    before = mock_llm.stats()["requests"]
    with pytest.raises(am.MissingConsumerError, match="consumer"):
        chat(client)
    with pytest.raises(am.MissingConsumerError):
        client.chat.completions.create(model=MODEL, messages=prompt(3), stream=True)
    with pytest.raises(am.MissingConsumerError):
        await aclient.chat.completions.create(model=MODEL, messages=prompt(3))
    assert mock_llm.stats()["requests"] == before  # no unbillable spend happened
    assert isinstance(am.MissingConsumerError("x"), am.AerostackMeterError)
    with am.consumer("known"):
        units = chat(client)
    assert mock_llm.stats()["requests"] == before + 1
    assert rows(gateway) == {("known", "api_test", "tokens"): units}
    assert meter.stats().missing_consumer == 0
    await aclient.close()


def test_raise_is_satisfied_by_any_level(meter_factory: Any, gateway: Any, client: openai.OpenAI) -> None:
    meter_factory(on_missing_consumer="raise", default_consumer_id="fallback")
    units = chat(client)
    assert rows(gateway) == {("fallback", "api_test", "tokens"): units}


def test_ignore_drops_quietly_but_still_counts(meter_factory: Any, gateway: Any, client: openai.OpenAI,
                                               caplog_meter: pytest.LogCaptureFixture) -> None:
    meter = meter_factory(on_missing_consumer="ignore")
    assert chat(client) > 0
    assert rows(gateway) == {}
    assert meter.stats().missing_consumer == 1
    assert _warnings(caplog_meter) == []


def test_bad_mode_is_a_config_error(meter_factory: Any) -> None:
    with pytest.raises(am.ConfigError, match="on_missing_consumer"):
        meter_factory(on_missing_consumer="loud")
