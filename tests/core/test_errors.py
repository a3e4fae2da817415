"""One error story: every bad argument to a public function raises ConfigError at once (also a
ValueError, always an AerostackMeterError), naming the function and the argument."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

import aerostack_meter as am
from aerostack_meter import AerostackMeterError, ConfigError, Meter, MissingConsumerError, providers
from aerostack_meter.providers import openai as openai_provider
from aerostack_meter.sinks import AerostackSink, FanOutSink


@pytest.fixture
def local_meter(tmp_path: Path) -> Iterator[Meter]:
    m = Meter(ledger_path=str(tmp_path / "l.db"), instrument=False)
    yield m
    m.shutdown()


def _bad_calls(m: Meter) -> list[tuple[str, str | None, str, Callable[[], Any]]]:
    """(label, call, argument, thunk): wrong types and wrong values alike."""
    client = openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="x")
    return [
        ("init type", None, "flush_interval", lambda: am.init(flush_interval="1")),
        ("init value", None, "flush_interval", lambda: am.init(flush_interval=-1)),
        ("init api_id type", None, "api_id", lambda: am.init(api_id=7)),
        ("Meter unknown", None, "flush_intervall", lambda: Meter(flush_intervall=1)),
        ("consumer type", "consumer", "consumer_id", lambda: am.consumer(None)),  # type: ignore[arg-type]
        ("consumer value", "consumer", "consumer_id", lambda: am.consumer(" ")),
        ("consumer api_id", "consumer", "api_id", lambda: am.consumer("u", api_id=7)),  # type: ignore[arg-type]
        ("consumer metrics", "consumer", "metrics", lambda: am.consumer("u", metrics="x")),  # type: ignore[arg-type]
        ("wrap client", "wrap", "client", lambda: am.wrap(object(), meter=m)),
        ("wrap consumer type", "wrap", "consumer_id", lambda: am.wrap(client, consumer_id=1, meter=m)),  # type: ignore[arg-type]
        ("wrap api_id value", "wrap", "api_id", lambda: am.wrap(client, api_id="", meter=m)),
        ("wrap metrics", "wrap", "metrics", lambda: am.wrap(client, metrics=3, meter=m)),  # type: ignore[arg-type]
        ("log consumer type", "log", "consumer_id", lambda: m.log(1, 1)),  # type: ignore[arg-type]
        ("log units type", "log", "units", lambda: m.log("u", "1")),  # type: ignore[arg-type]
        ("log units value", "log", "units", lambda: m.log("u", -1)),
        ("log metric", "log", "metric", lambda: m.log("u", 1, metric="")),
        ("log api_id", "log", "api_id", lambda: m.log("u", 1, api_id=5)),  # type: ignore[arg-type]
        ("register twice", "register", "provider", lambda: providers.register(openai_provider.PROVIDER)),
        ("sink without a key", "AerostackSink", "api_key", lambda: AerostackSink("")),
        ("fan-out of nothing", "FanOutSink", "sinks", lambda: FanOutSink([])),
    ]


def test_every_bad_argument_raises_config_error(local_meter: Meter) -> None:
    for label, call, argument, thunk in _bad_calls(local_meter):
        with pytest.raises(ConfigError) as info:
            thunk()
        err = info.value
        assert isinstance(err, AerostackMeterError) and isinstance(err, ValueError), label
        assert not isinstance(err, TypeError), label
        assert (err.setting, err.call) == (argument, call), label
        named = f"aerostack_meter.{call}(): argument {argument!r}" if call else f"setting {argument!r}"
        assert named in str(err), (label, str(err))
    assert am.get_meter() is None  # a refused init() leaves nothing behind


def test_log_without_any_api_id_is_a_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("AEROSTACK_API_ID", raising=False)
    m = Meter("ac_key", base_url="http://127.0.0.1:9/v1", instrument=False, exit_timeout=0)
    try:
        with pytest.raises(ConfigError, match="AEROSTACK_API_ID") as info:
            m.log("u", 1)
        assert (info.value.setting, info.value.call) == ("api_id", "log")
    finally:
        m.shutdown(0)


def test_missing_consumer_error_is_ours_but_not_a_config_error() -> None:
    assert issubclass(MissingConsumerError, AerostackMeterError)
    assert not issubclass(MissingConsumerError, ValueError)
    assert "ConfigError (also ValueError)" in (am._errors.__doc__ or "")  # the drawn tree


def test_no_api_key_says_where_usage_goes_once_at_warning(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("AEROSTACK_API_KEY", raising=False)
    caplog.set_level(logging.WARNING, logger="aerostack_meter")
    ledger = str(tmp_path / "usage.db")
    for _ in range(2):
        Meter(ledger_path=ledger, instrument=False).shutdown()
    said = [r for r in caplog.records if "no API key" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING
    assert ledger in said[0].getMessage() and "aerostack-meter report" in said[0].getMessage()


def test_a_disabled_meter_says_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("AEROSTACK_API_KEY", raising=False)
    caplog.set_level(logging.DEBUG, logger="aerostack_meter")
    Meter(ledger_path=str(tmp_path / "u.db"), disabled=True, instrument=False).shutdown()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
