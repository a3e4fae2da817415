"""Metric policies ("tokens", "split", callables), broken policies, and the ``before_send`` hook,
checked at the gateway (metric names and units) with usage from real SDK calls."""

from __future__ import annotations

import logging
import math
from typing import Any

import anthropic
import openai
import pytest

import aerostack_meter as am
from aerostack_meter import Usage

from ._helpers import MODEL, chat, prompt, rows

CACHE = {"x-mock-cache": "4", "x-mock-cache-write": "3", "x-mock-reasoning": "5"}


@pytest.fixture
def client(mock_llm: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=mock_llm.url, api_key="x")


def test_tokens_is_one_event_of_the_total(meter: am.Meter, gateway: Any, client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model=MODEL, messages=prompt(6), extra_headers=CACHE)
    assert r.usage is not None and r.usage.prompt_tokens_details is not None
    assert r.usage.prompt_tokens_details.cached_tokens == 4  # the mock did fill the cache
    assert rows(gateway) == {("default", "api_test", "tokens"): r.usage.total_tokens}


def test_split_openai_chat(meter_factory: Any, gateway: Any, client: openai.OpenAI) -> None:
    meter_factory(default_consumer_id="u", metrics="split")
    r = client.chat.completions.create(model=MODEL, messages=prompt(6), extra_headers=CACHE)
    u = r.usage
    assert u is not None and u.prompt_tokens_details is not None
    # prompt_tokens include cached_tokens; completion_tokens include the 5 reasoning tokens
    assert rows(gateway) == {
        ("u", "api_test", "input_tokens"): u.prompt_tokens - 4,
        ("u", "api_test", "cached_input_tokens"): 4,
        ("u", "api_test", "output_tokens"): u.completion_tokens,
    }
    assert u.prompt_tokens - 4 + 4 + u.completion_tokens == u.total_tokens  # parts never double count


def test_split_openai_responses_with_cache_writes(meter_factory: Any, gateway: Any,
                                                  client: openai.OpenAI) -> None:
    if not hasattr(client, "responses"):
        pytest.skip(f"openai {openai.__version__} has no responses")
    meter_factory(default_consumer_id="u", metrics="split")
    r = client.responses.create(model=MODEL, input="one two three four five six seven eight",
                                extra_headers=CACHE)
    u = r.usage
    assert u is not None
    got = rows(gateway)
    assert got == {
        ("u", "api_test", "input_tokens"): u.input_tokens - 4 - 3,
        ("u", "api_test", "cached_input_tokens"): 4,
        ("u", "api_test", "cache_write_tokens"): 3,
        ("u", "api_test", "output_tokens"): u.output_tokens,
    }
    assert sum(got.values()) == u.total_tokens


def test_split_anthropic_where_input_excludes_the_cache(meter_factory: Any, gateway: Any,
                                                        mock_llm: Any) -> None:
    meter_factory(default_consumer_id="u", metrics="split")
    client = anthropic.Anthropic(base_url=mock_llm.anthropic_base_url, api_key="x")
    m = client.messages.create(model="claude-test", max_tokens=50, messages=prompt(9),  # type: ignore[arg-type]
                               extra_headers=CACHE)
    u = m.usage
    assert (u.cache_read_input_tokens, u.cache_creation_input_tokens) == (4, 3)
    got = rows(gateway)
    assert got == {
        ("u", "api_test", "input_tokens"): u.input_tokens,  # Anthropic's input_tokens is already the fresh part
        ("u", "api_test", "cached_input_tokens"): 4,
        ("u", "api_test", "cache_write_tokens"): 3,
        ("u", "api_test", "output_tokens"): u.output_tokens,
    }
    assert sum(got.values()) == u.input_tokens + 4 + 3 + u.output_tokens


def test_split_omits_zero_cache_parts(meter_factory: Any, gateway: Any, client: openai.OpenAI) -> None:
    meter_factory(default_consumer_id="u", metrics="split")
    r = client.chat.completions.create(model=MODEL, messages=prompt(3))
    assert r.usage is not None
    assert rows(gateway) == {("u", "api_test", "input_tokens"): r.usage.prompt_tokens,
                             ("u", "api_test", "output_tokens"): r.usage.completion_tokens}


def test_callable_policy_sees_the_normalised_usage(meter_factory: Any, gateway: Any,
                                                   client: openai.OpenAI) -> None:
    seen: list[Usage] = []

    def credits(u: Usage) -> dict[str, int]:
        seen.append(u)
        return {"credits": u.input_tokens * 2 + u.output_tokens * 8, "calls": 1}

    meter_factory(default_consumer_id="u", metrics=credits)
    r = client.chat.completions.create(model=MODEL, messages=prompt(5), extra_headers=CACHE)
    assert r.usage is not None
    got = rows(gateway)
    assert got == {("u", "api_test", "credits"): r.usage.prompt_tokens * 2 + r.usage.completion_tokens * 8,
                   ("u", "api_test", "calls"): 1}
    (u,) = seen
    assert (u.provider, u.model, u.input_tokens, u.cached_input_tokens, u.reasoning_tokens) == (
        "openai", r.model, r.usage.prompt_tokens, 4, 5)
    assert u.total_tokens == u.input_tokens + u.output_tokens == r.usage.total_tokens


BROKEN: dict[str, Any] = {
    "negative": lambda u: {"tokens": -1},
    "float": lambda u: {"tokens": 2.5},
    "integral-float": lambda u: {"tokens": 3.0},
    "nan": lambda u: {"tokens": math.nan},
    "inf": lambda u: {"tokens": math.inf},
    "string": lambda u: {"tokens": "12"},
    "bool": lambda u: {"tokens": True},
    "none": lambda u: {"tokens": None},
    "huge": lambda u: {"tokens": 2**80},
    "bad-metric-name": lambda u: {"": 5},
    "non-string-metric": lambda u: {7: 5},
    "raises": lambda u: 1 / 0,
    "not-a-mapping": lambda u: [("tokens", 5)],
    "returns-none": lambda u: None,
}


@pytest.mark.parametrize("policy", list(BROKEN.values()), ids=list(BROKEN))
def test_a_broken_policy_never_breaks_the_call(meter_factory: Any, gateway: Any, client: openai.OpenAI,
                                               caplog_meter: pytest.LogCaptureFixture, policy: Any) -> None:
    meter = meter_factory(default_consumer_id="u", metrics=policy)
    for n in (2, 3):
        assert chat(client, n) > 0
    assert rows(gateway) == {}
    stats = meter.stats()
    assert stats.events_dropped == 2 and stats.calls_metered == 2
    assert set(stats.dropped) <= {"policy_invalid", "policy_error"}
    errors = [r for r in caplog_meter.records if r.name == "aerostack_meter" and r.levelno == logging.ERROR]
    assert len(errors) == 1  # logged once, not per call
    assert stats.internal_errors == 0


def test_one_bad_entry_drops_only_that_entry(meter_factory: Any, gateway: Any, client: openai.OpenAI) -> None:
    meter = meter_factory(default_consumer_id="u", metrics=lambda u: {"good": 7, "bad": -7})
    chat(client)
    assert rows(gateway) == {("u", "api_test", "good"): 7}
    assert meter.stats().dropped == {"policy_invalid": 1}


def test_before_send_changes_and_drops(meter_factory: Any, gateway: Any, client: openai.OpenAI) -> None:
    seen: list[am.UsageEvent] = []

    def hook(ev: am.UsageEvent) -> am.UsageEvent | None:
        seen.append(ev)
        if ev.consumer_id == "internal":
            return None  # staff usage is not billed
        if ev.consumer_id.startswith("legacy-"):
            return ev.replace(consumer_id=ev.consumer_id.removeprefix("legacy-"), units=ev.units * 2)
        return ev

    meter = meter_factory(default_consumer_id="u", before_send=hook)
    with am.consumer("internal"):
        chat(client, 2)
    with am.consumer("legacy-bob"):
        units = chat(client, 3)
    plain = chat(client, 4)
    am.log("carol", 5, metric="seats")  # manual events pass the hook too
    assert rows(gateway) == {("bob", "api_test", "tokens"): units * 2, ("u", "api_test", "tokens"): plain,
                             ("carol", "api_test", "seats"): 5}
    assert meter.stats().dropped == {"before_send": 1}
    assert len(seen) == 4
    internal = next(e for e in seen if e.consumer_id == "internal")
    assert (internal.provider, internal.model, internal.metric) == ("openai", MODEL, "tokens")


@pytest.mark.parametrize("result", [
    "not an event", {"units": 1}, 3.0,
], ids=["string", "dict", "float"])
def test_before_send_returning_garbage_is_dropped_and_counted(meter_factory: Any, gateway: Any,
                                                              client: openai.OpenAI, result: Any) -> None:
    meter = meter_factory(default_consumer_id="u", before_send=lambda ev: result)
    assert chat(client) > 0
    assert rows(gateway) == {}
    assert meter.stats().dropped == {"before_send_invalid": 1}


@pytest.mark.parametrize("change", [
    {"units": 3.0}, {"units": -1}, {"units": True}, {"consumer_id": ""}, {"metric": None},
], ids=["float-units", "negative-units", "bool-units", "empty-consumer", "no-metric"])
def test_before_send_bad_replacement_is_dropped(meter_factory: Any, gateway: Any, client: openai.OpenAI,
                                                change: dict[str, Any]) -> None:
    meter = meter_factory(default_consumer_id="u", before_send=lambda ev: ev.replace(**change))
    assert chat(client) > 0
    assert rows(gateway) == {}
    assert meter.stats().dropped == {"before_send_invalid": 1}


def test_before_send_that_raises(meter_factory: Any, gateway: Any, client: openai.OpenAI) -> None:
    def hook(ev: am.UsageEvent) -> am.UsageEvent:
        raise RuntimeError("bug in the hook")

    meter = meter_factory(default_consumer_id="u", before_send=hook)
    assert chat(client) > 0
    assert rows(gateway) == {}
    assert meter.stats().dropped == {"before_send_error": 1}


def test_wrap_and_scope_reject_a_bad_policy_at_once(client: openai.OpenAI) -> None:
    with pytest.raises(am.ConfigError):
        am.wrap(client, metrics="everything")  # type: ignore[arg-type]
    with pytest.raises(am.ConfigError):
        am.init(metrics=42)


@pytest.mark.parametrize(("usage", "split"), [
    # the worked examples of docs/metrics.md
    (Usage("openai", "m", 100, 50, 150, cached_input_tokens=60, reasoning_tokens=20),
     {"input_tokens": 40, "cached_input_tokens": 60, "output_tokens": 50}),
    (Usage("anthropic", "m", 125, 50, 175, cached_input_tokens=60, cache_write_tokens=25),
     {"input_tokens": 40, "cached_input_tokens": 60, "cache_write_tokens": 25, "output_tokens": 50}),
    (Usage("openai", "m", 0, 0, 0), {"input_tokens": 0, "output_tokens": 0}),
])
def test_documented_split_examples(usage: Usage, split: dict[str, int]) -> None:
    from aerostack_meter._usage import apply_policy

    assert apply_policy("split", usage) == split
    assert sum(split.values()) == usage.total_tokens == apply_policy("tokens", usage)["tokens"]


def test_split_never_double_counts_inconsistent_usage() -> None:
    """A server claiming more cached/written tokens than input tokens: the parts are clamped."""
    from aerostack_meter._usage import apply_policy

    u = Usage("openai", "m", input_tokens=10, output_tokens=5, total_tokens=15,
              cached_input_tokens=8, cache_write_tokens=7)
    assert apply_policy("split", u) == {"input_tokens": 0, "output_tokens": 5,
                                        "cached_input_tokens": 8, "cache_write_tokens": 2}
    u = Usage("openai", "m", input_tokens=10, output_tokens=5, total_tokens=15, cached_input_tokens=40)
    assert apply_policy("split", u) == {"input_tokens": 0, "output_tokens": 5, "cached_input_tokens": 10}


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
def test_a_hook_or_policy_interrupted_interrupts_the_caller(exc: type[BaseException], meter_factory: Any,
                                                            gateway: Any) -> None:
    """``before_send`` and a policy run on the caller's thread (durable mode): Ctrl-C or an exit
    raised there is the caller's, not an event dropped."""
    def hook(ev: am.UsageEvent) -> am.UsageEvent:
        raise exc

    meter = meter_factory(default_consumer_id="u", before_send=hook)
    with pytest.raises(exc):
        meter.log("u", 3)
    assert "before_send_error" not in meter.stats().dropped
