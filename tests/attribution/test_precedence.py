"""Who is billed, highest first: ``consumer()`` scope > ``consumer_resolver`` > ``wrap()`` defaults >
``init()`` defaults > the environment. The API id: scope > ``wrap()`` > ``init()`` > environment."""

from __future__ import annotations

from typing import Any

import openai
import pytest

import aerostack_meter as am

from ._helpers import chat, rows


@pytest.fixture
def client(mock_llm: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=mock_llm.url, api_key="x")


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AEROSTACK_METER_DEFAULT_CONSUMER", "env_user")
    monkeypatch.setenv("AEROSTACK_API_ID", "api_env")


def test_each_consumer_level_beats_the_next(meter_factory: Any, gateway: Any, client: openai.OpenAI,
                                            env: None) -> None:
    user: list[Any] = [None]
    meter_factory(default_consumer_id="init_user", consumer_resolver=lambda: user[0])
    wrapped = am.wrap(client, consumer_id="wrap_user")
    expected: dict[tuple[str, str, str], int] = {}

    def call(c: openai.OpenAI, who: str) -> None:
        key = (who, "api_test", "tokens")
        expected[key] = expected.get(key, 0) + chat(c, len(expected) + 2)

    user[0] = "resolved_user"
    with am.consumer("scope_user"):
        call(wrapped, "scope_user")  # scope > resolver > wrap > init > env
    call(wrapped, "resolved_user")  # resolver > wrap
    call(client, "resolved_user")  # resolver > init
    user[0] = None  # the resolver knows nobody: fall through
    call(wrapped, "wrap_user")  # wrap > init
    call(client, "init_user")  # init > env
    assert rows(gateway) == expected


def test_environment_is_the_last_resort(meter_factory: Any, gateway: Any, client: openai.OpenAI,
                                        env: None) -> None:
    meter_factory(api_id=None)
    units = chat(client)
    with am.consumer("scoped"):
        scoped = chat(client)
    assert rows(gateway) == {("env_user", "api_env", "tokens"): units,
                             ("scoped", "api_env", "tokens"): scoped}


def test_api_id_precedence(meter_factory: Any, gateway: Any, client: openai.OpenAI, env: None) -> None:
    meter_factory(default_consumer_id="u", api_id="api_init")
    wrapped = am.wrap(client, api_id="api_wrap")
    with am.consumer("u", api_id="api_scope"):
        a = chat(wrapped, 2)
    with am.consumer("u"):  # a scope without an api_id keeps the client's
        b = chat(wrapped, 3)
    c = chat(client, 4)
    assert rows(gateway) == {("u", "api_scope", "tokens"): a, ("u", "api_wrap", "tokens"): b,
                             ("u", "api_init", "tokens"): c}


def test_resolver_for_apps_that_keep_the_user_elsewhere(meter_factory: Any, gateway: Any,
                                                        client: openai.OpenAI) -> None:
    import threading

    request = threading.local()  # e.g. a web framework's request-local user
    meter_factory(consumer_resolver=lambda: getattr(request, "user_id", None))
    request.user_id = "usr_42"
    units = chat(client)
    assert rows(gateway) == {("usr_42", "api_test", "tokens"): units}


@pytest.mark.parametrize("resolver", [lambda: 1 / 0, lambda: 42, lambda: ""],
                         ids=["raises", "not-a-string", "empty"])
def test_a_broken_resolver_falls_through_and_never_breaks_the_call(
        meter_factory: Any, gateway: Any, client: openai.OpenAI, resolver: Any) -> None:
    meter = meter_factory(default_consumer_id="fallback", consumer_resolver=resolver)
    units = chat(client)
    assert rows(gateway) == {("fallback", "api_test", "tokens"): units}
    assert meter.stats().missing_consumer == 0


def test_metric_policy_precedence(meter_factory: Any, gateway: Any, client: openai.OpenAI) -> None:
    meter_factory(default_consumer_id="init", metrics=lambda u: {"init_metric": 1})
    wrapped = am.wrap(client, consumer_id="wrap", metrics=lambda u: {"wrap_metric": 2})
    chat(client)
    chat(wrapped)
    with am.consumer("scope", metrics=lambda u: {"scope_metric": 3}):
        chat(wrapped)
        chat(client)
    assert rows(gateway) == {("init", "api_test", "init_metric"): 1,
                             ("wrap", "api_test", "wrap_metric"): 2,
                             ("scope", "api_test", "scope_metric"): 6}


def test_a_scope_resolves_once_and_never_for_another_meter_or_client(
        meter_factory: Any, gateway: Any, client: openai.OpenAI) -> None:
    """Who is billed is resolved once per scope (and once outside any scope) and reused while the
    same meter settings and ``wrap()`` defaults ask: interleaved calls through clients with other
    defaults, a resolver that changes its answer, and a new ``init()`` each get their own."""
    answer: list[Any] = [None]
    meter_factory(default_consumer_id="init_a", consumer_resolver=lambda: answer[0])
    a = am.wrap(client, api_id="api_a")
    b = am.wrap(client, consumer_id="wrap_b", api_id="api_b")
    expected: dict[tuple[str, str, str], int] = {}

    def call(c: openai.OpenAI, who: str, api: str) -> None:
        key = (who, api, "tokens")
        expected[key] = expected.get(key, 0) + chat(c, len(expected) + 2)

    with am.consumer("scoped"):
        for _ in range(2):
            call(client, "scoped", "api_test")
            call(a, "scoped", "api_a")
            call(b, "scoped", "api_b")
            with am.consumer("inner", api_id="api_inner"):
                call(client, "inner", "api_inner")
                call(b, "inner", "api_inner")
    for c, default, api in ((client, "init_a", "api_test"), (b, "wrap_b", "api_b")):
        for who in (None, "resolved_1", "resolved_1", None, "resolved_2"):  # asked on every call
            answer[0] = who
            call(c, who or default, api)
    assert rows(gateway) == expected

    # New settings (another init()): nothing resolved before is reused, also inside a scope
    meter_factory(default_consumer_id="init_b", api_id="api_b2")
    gateway.client.reset()
    expected.clear()
    call(client, "init_b", "api_b2")
    call(client, "init_b", "api_b2")
    with am.consumer("scoped"):
        call(client, "scoped", "api_b2")
        meter_factory(default_consumer_id="init_c", api_id="api_b2", metrics="split")  # same API id
        r = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        assert r.usage is not None
        expected[("scoped", "api_b2", "input_tokens")] = r.usage.prompt_tokens
        expected[("scoped", "api_b2", "output_tokens")] = r.usage.completion_tokens
    assert rows(gateway) == expected
