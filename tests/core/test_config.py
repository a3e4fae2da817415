"""init() validation, environment precedence and secrecy of the API key."""

from __future__ import annotations

import logging
from typing import Any

import pytest

import aerostack_meter as am
from aerostack_meter import ConfigError, Meter
from aerostack_meter._config import build_settings
from tests.standin import standin_server

SECRET = "ac_secret_NEVER_SHOW_ME_123"


@pytest.mark.parametrize(
    ("kwargs", "setting", "words"),
    [
        ({"bogus_option": 1}, "bogus_option", "unknown option"),
        ({"flush_interval": 0}, "flush_interval", "positive"),
        ({"read_timeout": -1}, "read_timeout", "positive"),
        ({"connect_timeout": "2"}, "connect_timeout", "number"),
        ({"max_queue_size": 1.5}, "max_queue_size", "whole number"),
        ({"base_url": "ftp://example.com/v1"}, "base_url", "http(s)"),
        ({"base_url": "not a url"}, "base_url", "http(s)"),
        ({"base_url": "http://billing.example.com/v1"}, "base_url", "allow_insecure"),
        ({"on_missing_consumer": "explode"}, "on_missing_consumer", "one of"),
        ({"metrics": "dollars"}, "metrics", "tokens"),
        ({"api_id": ""}, "api_id", "empty"),
        ({"coalesce": "yes"}, "coalesce", "True or False"),
        ({"before_send": 3}, "before_send", "callable"),
        ({"instrument": ["cohere"]}, "instrument", "unknown provider"),
        ({"flush_interval": float("nan")}, "flush_interval", "finite"),
    ],
)
def test_bad_settings_fail_at_init_naming_the_setting(kwargs: dict[str, Any], setting: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        am.init(SECRET, **kwargs)
    assert info.value.setting == setting
    assert setting in str(info.value) and words in str(info.value)
    assert SECRET not in str(info.value)
    assert am.get_meter() is None


def test_plain_http_to_loopback_is_allowed_and_insecure_is_opt_in() -> None:
    assert build_settings("k", base_url="http://127.0.0.1:8787/v1").base_url == "http://127.0.0.1:8787/v1"
    assert build_settings("k", base_url="http://localhost:8787/v1/").base_url == "http://localhost:8787/v1"
    s = build_settings("k", base_url="http://billing.internal/v1", allow_insecure=True)
    assert s.base_url == "http://billing.internal/v1"


def test_environment_is_read_and_explicit_arguments_win() -> None:
    env = {"AEROSTACK_API_KEY": "env-key", "AEROSTACK_API_ID": "env-api",
           "AEROSTACK_BASE_URL": "https://env.example/v1", "AEROSTACK_METER_LEDGER": "/tmp/x.db",
           "AEROSTACK_METER_DISABLED": "1"}
    s = build_settings(environ=env)
    assert s.api_key is not None and s.api_key.reveal() == "env-key"
    assert (s.api_id, s.base_url, s.ledger_path, s.disabled) == ("env-api", "https://env.example/v1", "/tmp/x.db", True)
    s = build_settings("arg-key", api_id="arg-api", base_url="https://arg.example/v1", environ=env,
                       disabled=False)
    assert s.api_key is not None and s.api_key.reveal() == "arg-key"
    assert (s.api_id, s.base_url, s.disabled) == ("arg-api", "https://arg.example/v1", False)
    assert build_settings(environ={}).base_url == "https://api.aerostack.dev/v1"


@pytest.mark.parametrize("name, setting", [("AEROSTACK_METER_DISABLED", "disabled"),
                                           ("AEROSTACK_METER_DURABLE", "durable"),
                                           ("AEROSTACK_METER_OTEL", "otel")])
def test_boolean_environment_variables_read_the_usual_words_and_refuse_others(name: str,
                                                                               setting: str) -> None:
    for word, want in (("1", True), ("TRUE", True), (" on ", True), ("yes", True),
                       ("0", False), ("False", False), ("off", False), ("no", False)):
        assert getattr(build_settings(environ={name: word}), setting) is want, word
    # a typo is a bad value like any other: ConfigError naming the setting, not a silent default
    with pytest.raises(ConfigError) as err:
        build_settings(environ={name: "maybe"})
    assert err.value.setting == setting and name in str(err.value) and "'maybe'" in str(err.value)
    assert getattr(build_settings(environ={name: ""}), setting) is (setting == "durable")


def test_init_twice_is_idempotent_and_reconfigures_on_change(tmp_path: Any) -> None:
    try:
        a = am.init(ledger_path=str(tmp_path / "a.db"), instrument=False)
        assert am.init(ledger_path=str(tmp_path / "a.db"), instrument=False) is a
        b = am.init(ledger_path=str(tmp_path / "b.db"), instrument=False)
        assert b is not a and am.get_meter() is b
    finally:
        am.shutdown()


@pytest.mark.parametrize(
    ("args", "argument"),
    [
        ((123, 1), "consumer_id"),
        (("", 1), "consumer_id"),
        (("c", -1), "units"),
        (("c", 1.5), "units"),
        (("c", True), "units"),
        (("c", "10"), "units"),
        (("c", 2**60), "units"),
    ],
)
def test_log_rejects_bad_arguments_at_once(args: tuple[Any, Any], argument: str, tmp_path: Any) -> None:
    m = Meter(ledger_path=str(tmp_path / "l.db"))
    with pytest.raises(ConfigError) as info:
        m.log(*args)
    assert info.value.setting == argument and info.value.call == "log"
    m.shutdown()


def test_the_key_never_shows(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    with standin_server() as gw:
        gw.respond((401, {}, b'{"code":"AUTH_INVALID_KEY","message":"invalid key"}'), 503)
        m = Meter(SECRET, api_id="a", base_url=gw.url, flush_interval=0.05, backoff_base=0.01)
        m.log("c", 1)
        m.log("d", 1)
        m.flush(5)
        texts = [repr(m), str(m), repr(m.settings), str(m.settings), repr(m.sink), repr(m.stats()),
                 f"{m.settings.api_key}", repr(m.settings.api_key), caplog.text]
        m.shutdown()
        assert gw.requests[0].headers["x-aerostack-key"] == SECRET  # it is sent, only to the API
    out = capsys.readouterr()
    for text in [*texts, out.out, out.err]:
        assert SECRET not in text
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(m.settings.api_key)


def test_disabled_meter_records_nothing(tmp_path: Any) -> None:
    m = Meter(ledger_path=str(tmp_path / "l.db"), disabled=True)
    m.log("c", 5)
    assert m.flush(1)
    assert m.stats().events_enqueued == 0
    m.shutdown()


@pytest.mark.parametrize("raw", ["ac_secret_k8s\n", "  ac_secret_k8s\r\n", "\tac_secret_k8s "])
def test_a_key_read_with_surrounding_whitespace_is_sent_without_it(raw: str) -> None:
    # A key read from a mounted secret or an env file often ends in a newline: no HTTP header can
    # carry one, so the request never left the process and flush() waited for ever.
    with standin_server() as gw:
        m = Meter(raw, api_id="api", base_url=gw.url, flush_interval=0.01)
        m.log("usr", 5)
        assert m.flush(10)
        m.shutdown()
        assert [r.headers["x-aerostack-key"] for r in gw.requests] == ["ac_secret_k8s"]
        assert gw.units_by_consumer() == {"usr": 5}


@pytest.mark.parametrize("bad", ["ac secret", "ac_secret_cl\u00e9", "ac\u200bsecret", "ac\nsecret", "ac\x00x"])
def test_a_key_no_header_can_carry_is_refused_at_once_without_quoting_it(bad: str) -> None:
    for build in (lambda: Meter(bad, api_id="api", base_url="http://127.0.0.1:9/v1"),
                  lambda: build_settings(environ={"AEROSTACK_API_KEY": bad}),
                  lambda: am.sinks.AerostackSink(bad)):
        with pytest.raises(ConfigError) as info:
            build()
        assert info.value.setting == "api_key" and bad not in str(info.value)
