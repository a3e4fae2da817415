"""metrics="cost": calls priced from the genai-prices table in micro-USD, checked at the gateway
with usage from real SDK calls against the mock LLM server (prices: the table's published rates)."""

from __future__ import annotations

import logging
import threading
from decimal import Decimal
from typing import Any, ClassVar

import anthropic
import openai
import pytest
from genai_prices.types import ModelPrice

import aerostack_meter as am
from aerostack_meter import Usage
from aerostack_meter.testing import capture_usage

from ..attribution._helpers import rows

SONNET = "claude-sonnet-4-5"  # $3 in, $15 out, $0.30 cache read, $3.75 5m write, $6 1h write /MTok


@pytest.fixture
def claude(mock_llm: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=mock_llm.anthropic_base_url, api_key="x")


@pytest.fixture
def gpt(mock_llm: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=mock_llm.url, api_key="x")


def ask(client: anthropic.Anthropic, words: int, headers: dict[str, str] | None = None) -> Any:
    return client.messages.create(model=SONNET, max_tokens=100, extra_headers=headers,
                                  messages=[{"role": "user", "content": " ".join(["w"] * words)}])


def test_anthropic_cache_reads_and_5m_and_1h_writes_are_priced_apart(
        meter_factory: Any, gateway: Any, claude: anthropic.Anthropic) -> None:
    meter_factory(default_consumer_id="u", metrics="cost")
    r = ask(claude, 997, {"x-mock-cache": "300", "x-mock-cache-write": "200",
                          "x-mock-cache-write-1h": "50", "x-mock-output-tokens": "40"})
    u = r.usage
    assert (u.input_tokens, u.cache_read_input_tokens, u.cache_creation_input_tokens) == (500, 300, 200)
    assert u.cache_creation is not None and u.cache_creation.ephemeral_1h_input_tokens == 50
    # µUSD per token = USD per MTok: 500*3 + 300*0.30 + 150*3.75 + 50*6 + 40*15
    # = 3052.5, billed 3052 (half to even), 0.5 carried to this consumer's next call
    assert rows(gateway) == {("u", "api_test", "cost_micro_usd"): 3052}


def test_cache_priced_as_cache_not_as_fresh_input(meter_factory: Any, gateway: Any,
                                                  claude: anthropic.Anthropic) -> None:
    meter_factory(default_consumer_id="u", metrics="cost")
    with am.consumer("cold"):
        ask(claude, 997, {"x-mock-output-tokens": "10"})
    with am.consumer("warm"):
        ask(claude, 997, {"x-mock-cache": "900", "x-mock-output-tokens": "10"})
    got = rows(gateway)
    assert got[("cold", "api_test", "cost_micro_usd")] == 1000 * 3 + 10 * 15
    assert got[("warm", "api_test", "cost_micro_usd")] == 100 * 3 + 900 * 3 // 10 + 10 * 15


def test_openai_reasoning_is_output_and_service_tier_changes_the_price(
        meter_factory: Any, gateway: Any, gpt: openai.OpenAI) -> None:
    meter_factory(default_consumer_id="u", metrics="cost")
    body = {"model": "gpt-5", "messages": [{"role": "user", "content": " ".join(["w"] * 997)}]}
    for tier in ("default", "flex", "priority"):
        with am.consumer(tier):
            r = gpt.chat.completions.create(**body, extra_headers={
                "x-mock-service-tier": tier, "x-mock-reasoning": "60", "x-mock-output-tokens": "40"})
            assert r.service_tier == tier and r.usage is not None
            assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (1000, 100)
    got = {k[0]: v for k, v in rows(gateway).items()}
    # gpt-5: $1.25 in / $10 out per MTok; flex is half; priority $2.50 / $20
    assert got == {"default": 1250 + 1000, "flex": 625 + 500, "priority": 2500 + 2000}


def test_long_context_tier_prices_every_token_at_the_tier_rate() -> None:
    policy = am.cost_policy()
    below = Usage("anthropic", SONNET, 200_000, 1000, 201_000)
    above = Usage("anthropic", SONNET, 200_001, 1000, 201_001)
    assert policy(below) == {"cost_micro_usd": 200_000 * 3 + 1000 * 15}
    # above 200k input tokens: $6 in, $22.50 out for the whole call
    assert policy(above) == {"cost_micro_usd": 200_001 * 6 + 22_500}


def test_audio_tokens_use_the_audio_rates() -> None:
    policy = am.cost_policy()
    text = Usage("openai", "gpt-audio", 1000, 1000, 2000)
    audio = text._replace(audio_input_tokens=400, audio_output_tokens=300)
    assert policy(text) == {"cost_micro_usd": 1000 * 2.5 + 1000 * 10}  # text $2.50 / $10 per MTok
    # audio $32 in / $64 out per MTok, the rest at the text rates
    assert policy(audio) == {"cost_micro_usd": 600 * 2.5 + 400 * 32 + 700 * 10 + 300 * 64}


def test_remainder_is_carried_per_consumer_so_sub_unit_calls_are_billed(meter_factory: Any,
                                                                        gateway: Any) -> None:
    # 1 input token of "tiny" costs 0.3 µUSD: rounding each call alone would bill 0 every time.
    policy = am.cost_policy(prices={"tiny": {"input_mtok": "0.3", "output_mtok": "0.3"}})
    assert policy(Usage("openai", "tiny", 1, 0, 1)) == {"cost_micro_usd": 0}  # alone: 0.3 -> 0
    meter = meter_factory(metrics=policy)
    for _ in range(1000):
        for who in ("a", "b"):
            meter.record(Usage("openai", "tiny", 1, 0, 1), meter.attribute(am._meter.Defaults(who), "t"))
    assert rows(gateway) == {("a", "api_test", "cost_micro_usd"): 300,
                             ("b", "api_test", "cost_micro_usd"): 300}
    assert policy.carried("a", "api_test") == 0


def test_half_even_carry_never_drifts() -> None:
    # 0.5 µUSD per call, 7 calls = 3.5: billed 0,1,0,1,0,1,0 (half-to-even), 3 in all, 0.5 carried
    policy = am.cost_policy(prices={"half": {"input_mtok": "0.5"}})
    billed = [policy.bill(Usage("openai", "half", 1, 0, 1), "c", "api", 0.0) for _ in range(7)]
    assert [b["cost_micro_usd"] for b in billed if b] == [0, 1, 0, 1, 0, 1, 0]
    assert policy.carried("c", "api") == Decimal("0.5")


def test_unknown_model_is_billed_in_tokens_counted_and_warned_once(
        meter_factory: Any, gateway: Any, gpt: openai.OpenAI, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="aerostack_meter")
    meter = meter_factory(default_consumer_id="u", metrics="cost")
    totals = 0
    for _ in range(2):
        r = gpt.chat.completions.create(model="ft:my-private-model", messages=[{"role": "user", "content": "hi"}])
        assert r.usage is not None
        totals += r.usage.total_tokens
    assert rows(gateway) == {("u", "api_test", "tokens"): totals}  # never cost_micro_usd 0
    assert meter.stats().unpriced == 2
    warned = [rec for rec in caplog.records if "ft:my-private-model" in rec.getMessage()]
    assert len(warned) == 1


def test_price_table_version_in_stats_and_event_metadata(gpt: openai.OpenAI) -> None:
    from importlib.metadata import version

    with capture_usage(metrics="cost", default_consumer_id="u") as usage:
        assert usage.meter.stats().price_table == f"genai-prices {version('genai-prices')}"
        gpt.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        (event,) = usage.events
        (batch,) = usage.sink.batches
    assert event.metric == "cost_micro_usd" and event.units > 0
    assert event.price_table == f"genai-prices {version('genai-prices')}"
    assert set(batch.wire()) == {"consumerId", "apiId", "metric", "units"}  # the table stays local


def test_the_local_ledger_keeps_the_price_table(gpt: openai.OpenAI, tmp_path: Any) -> None:
    import sqlite3
    from importlib.metadata import version

    meter = am.Meter(ledger_path=str(tmp_path / "ledger.db"), metrics="cost", flush_interval=0.05)
    try:
        am.wrap(gpt, meter=meter, consumer_id="u").chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        assert meter.flush(10)
    finally:
        meter.shutdown(5)
    with sqlite3.connect(tmp_path / "ledger.db") as conn:
        rows = conn.execute("SELECT metric, price_table FROM ledger").fetchall()
    assert rows == [("cost_micro_usd", f"genai-prices {version('genai-prices')}")]


def test_markup_credits_and_metric_name(meter_factory: Any, gateway: Any, claude: anthropic.Anthropic) -> None:
    # credits worth $0.0001 each, +50%: 1000 input tokens at $3/MTok = $0.003 -> 45 credits
    meter_factory(default_consumer_id="u", metrics=am.cost_policy(markup=1.5, unit="0.0001", metric="credits"))
    ask(claude, 997, {"x-mock-output-tokens": "0"})
    assert rows(gateway) == {("u", "api_test", "credits"): 45}


def test_price_overrides_for_private_models(meter_factory: Any, gateway: Any, gpt: openai.OpenAI) -> None:
    meter_factory(default_consumer_id="u", metrics=am.cost_policy(
        prices={"ft:gpt-4o-mini:acme::x1": {"input_mtok": 0.3, "cache_read_mtok": 0.15, "output_mtok": 1.2},
                "gpt-4o-mini": ModelPrice(input_mtok=Decimal(1), output_mtok=Decimal(2))}))
    with am.consumer("ft"):
        gpt.chat.completions.create(model="ft:gpt-4o-mini:acme::x1", extra_headers={
            "x-mock-cache": "500", "x-mock-output-tokens": "100"},
            messages=[{"role": "user", "content": " ".join(["w"] * 997)}])
    with am.consumer("std"):
        gpt.chat.completions.create(model="gpt-4o-mini", extra_headers={"x-mock-output-tokens": "100"},
                                    messages=[{"role": "user", "content": " ".join(["w"] * 997)}])
    got = {k[0]: v for k, v in rows(gateway).items()}
    assert got == {"ft": 150 + 75 + 120, "std": 1000 + 200}


class _ThreadRecordingPrice(ModelPrice):
    """A user price object that notes the thread it is asked on."""

    threads: ClassVar[list[str]] = []

    def calc_price(self, usage: Any) -> Any:
        self.threads.append(threading.current_thread().name)
        return super().calc_price(usage)


def test_pricing_runs_on_the_reporter_thread_not_the_callers(gpt: openai.OpenAI) -> None:
    price = _ThreadRecordingPrice(input_mtok=Decimal(1), output_mtok=Decimal(1))
    with capture_usage(metrics=am.cost_policy(prices={"gpt-4o-mini": price}),
                                  default_consumer_id="u") as usage:
        gpt.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
        assert usage.events
    assert price.threads and threading.current_thread().name not in price.threads


@pytest.mark.parametrize("kwargs", [{"markup": -1}, {"unit": 0}, {"unit": "x"}, {"metric": ""},
                                    {"prices": {"m": {"input": 1}}}, {"prices": {"m": {"input_mtok": -1}}},
                                    {"fallback": "cost"}, {"fallback": "bogus"}])
def test_bad_cost_policy_settings_raise_config_error(kwargs: dict[str, Any]) -> None:
    with pytest.raises(am.ConfigError):
        am.cost_policy(**kwargs)
