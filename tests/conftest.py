"""Shared fixtures: the local gateway emulator and mock LLM server (real loopback HTTP), and a
process-wide meter pointed at the gateway, reset around every test that uses it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

import aerostack_meter as am
from aerostack_meter import _log
from aerostack_meter.servers import start_gateway, start_mock_llm

API_KEY = "ac_secret_test_key_DO_NOT_LEAK"
API_ID = "api_test"


@pytest.fixture(scope="session")
def gateway() -> Iterator[Any]:
    handle = start_gateway(keys=[API_KEY])
    yield handle
    handle.stop()


@pytest.fixture(scope="session")
def mock_llm() -> Iterator[Any]:
    handle = start_mock_llm()
    yield handle
    handle.stop()


@pytest.fixture
def meter_factory(gateway: Any) -> Iterator[Any]:
    """``meter_factory(**options)``: ``aerostack_meter.init()`` against the gateway emulator."""
    gateway.client.reset()
    _log._reset_for_tests()

    def make(**options: Any) -> am.Meter:
        options.setdefault("api_key", API_KEY)
        options.setdefault("api_id", API_ID)
        options.setdefault("base_url", gateway.url)
        options.setdefault("flush_interval", 0.05)
        return am.init(**options)

    yield make
    am.shutdown(timeout=5)
    am.uninstrument()


@pytest.fixture
def meter(meter_factory: Any) -> am.Meter:
    """The process-wide meter, instrumenting the SDKs, billing to consumer ``default`` unless a
    scope says otherwise."""
    return meter_factory(default_consumer_id="default")  # type: ignore[no-any-return]


def billed(gateway: Any, timeout: float = 10.0) -> dict[str, int]:
    """Flush the process-wide meter and return the gateway's units per consumer (all metrics)."""
    assert am.flush(timeout), "flush timed out"
    return dict(gateway.client.totals_by_consumer())


@pytest.fixture
def caplog_meter(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="aerostack_meter")
    return caplog


_SECTION_CAP = 20_000  # characters of captured output or log shown per section of a failure


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Cap what a failure prints: a server that logs in a loop must not bury the assertion."""
    outcome = yield
    report = outcome.get_result()
    capped = []
    for title, text in report.sections:
        if len(text) > _SECTION_CAP:
            half = _SECTION_CAP // 2
            text = (f"{text[:half]}\n... [{len(text) - _SECTION_CAP} characters cut] ...\n"
                    f"{text[-half:]}")
        capped.append((title, text))
    report.sections = capped


@pytest.fixture(autouse=True)
def _private_state_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test journals into a state directory of its own (child processes inherit it), so
    no test adopts what another left behind."""
    monkeypatch.setenv("AEROSTACK_METER_STATE_DIR", str(tmp_path_factory.mktemp("state")))


@pytest.fixture(autouse=True)
def _forget_a_shut_down_meter() -> Iterator[None]:
    """``shutdown()`` keeps the process-wide meter (a later use restarts it); between tests a
    meter that was shut down is forgotten, so each test starts with none."""
    yield
    from aerostack_meter import _global

    meter = _global.get_meter()
    if meter is not None and meter._closed:
        _global._set(None, None)


@pytest.fixture(autouse=True)
def _fresh_log_once() -> None:
    """Each test sees the library's once-only log lines afresh."""
    _log._reset_for_tests()
