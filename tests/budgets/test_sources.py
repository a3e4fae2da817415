"""Budget sources against real local services: the gateway emulator's wallets (balance read and
402 answers) and the local ledger of what was billed."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

import aerostack_meter as am
from aerostack_meter.servers import start_gateway

from ..conftest import API_KEY

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture
def wallet_gateway() -> Iterator[Any]:
    handle = start_gateway(keys=[API_KEY], wallets={"poor": 120, "rich": 1_000_000})
    yield handle
    handle.stop()


def test_the_gateway_wallet_is_the_budget(wallet_gateway: Any, gpt: openai.OpenAI, tmp_path: Path) -> None:
    meter = am.Meter(API_KEY, api_id="api_test", base_url=wallet_gateway.url, flush_interval=0.05,
                     budget=am.Budget.gateway(ttl=0, lag=0), ledger_path=str(tmp_path / "l.db"))
    client = am.wrap(gpt, meter=meter)
    try:
        with am.consumer("poor"):
            r = client.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=99)  # fits 120
            assert r.usage is not None
            assert meter.flush(10)
            with pytest.raises(am.BudgetExceededError) as info:  # 1 + 110 > what the wallet has left
                client.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=110)
        assert info.value.remaining == 120 - r.usage.total_tokens  # read back from the wallet
        with am.consumer("nowallet"):  # no wallet at the gateway: unlimited
            client.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=100_000)
        assert wallet_gateway.client.wallets()["poor"] == 120 - r.usage.total_tokens
    finally:
        meter.shutdown(5)


def test_a_402_keeps_the_usage_and_calls_on_rejected(wallet_gateway: Any, gpt: openai.OpenAI,
                                                     tmp_path: Path) -> None:
    told: list[tuple[am.UsageEvent, str]] = []
    ledger = tmp_path / "ledger.db"
    meter = am.Meter(API_KEY, api_id="api_test", base_url=wallet_gateway.url, flush_interval=0.05,
                     ledger_path=str(ledger), on_rejected=lambda ev, why: told.append((ev, why)))
    client = am.wrap(gpt, meter=meter, consumer_id="poor")
    try:
        r = client.chat.completions.create(model="gpt-4o-mini", max_tokens=500, messages=[
            {"role": "user", "content": " ".join(["w"] * 200)}])  # more than the 120 in the wallet
        assert r.usage is not None
        assert meter.flush(10)
        stats = meter.stats()
    finally:
        meter.shutdown(5)
    assert stats.rejected == 1 and stats.events_dropped == 0
    ((event, reason),) = told
    assert (event.consumer_id, event.metric, event.units) == ("poor", "tokens", r.usage.total_tokens)
    assert "insufficient" in reason
    with sqlite3.connect(ledger) as conn:
        kept = conn.execute("SELECT consumer_id, units FROM rejected").fetchall()
    assert kept == [("poor", r.usage.total_tokens)]
    assert wallet_gateway.client.wallets()["poor"] == 120  # nothing debited


def test_limits_count_what_the_local_ledger_billed_this_period(gpt: openai.OpenAI, tmp_path: Path) -> None:
    ledger = str(tmp_path / "ledger.db")
    first = am.Meter(ledger_path=ledger, flush_interval=0.05)
    r = am.wrap(gpt, meter=first, consumer_id="u").chat.completions.create(
        model="gpt-4o-mini", messages=HI, max_tokens=20)
    assert r.usage is not None
    first.shutdown(5)

    budget = am.Budget(limits={"u": 1000}, period="day")
    second = am.Meter(ledger_path=ledger, flush_interval=0.05, budget=budget)  # a restart
    try:
        assert budget.remaining("u") == 1000 - r.usage.total_tokens
        with pytest.raises(am.BudgetExceededError):
            am.wrap(gpt, meter=second, consumer_id="u").chat.completions.create(
                model="gpt-4o-mini", messages=HI, max_tokens=1000 - r.usage.total_tokens)
    finally:
        second.shutdown(5)


@pytest.mark.parametrize("metrics", ["tokens", "split"])
def test_a_restart_counts_the_ledger_whatever_the_token_metrics(gpt: openai.OpenAI, tmp_path: Path,
                                                                 metrics: str) -> None:
    """metrics="split" writes input_tokens/output_tokens rows: they add up to the tokens a
    "tokens" budget counts, so a restart starts where the last run ended."""
    ledger = str(tmp_path / "ledger.db")
    first = am.Meter(ledger_path=ledger, flush_interval=0.05, metrics=metrics)
    client = am.wrap(gpt, meter=first, consumer_id="u")
    used = 0
    for _ in range(2):
        r = client.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=20)
        assert r.usage is not None
        used += r.usage.total_tokens
    first.shutdown(5)

    budget = am.Budget(limits={"u": 1000}, period="day")
    second = am.Meter(ledger_path=ledger, flush_interval=0.05, budget=budget, metrics=metrics)
    try:
        assert budget.remaining("u") == 1000 - used
    finally:
        second.shutdown(5)


def test_bad_budget_settings_raise_config_error() -> None:
    for bad in (lambda: am.Budget(limits={"u": -1}), lambda: am.Budget(period="week"),  # type: ignore[arg-type]
                lambda: am.Budget(unit="euros"), lambda: am.Budget.from_balance(5),  # type: ignore[arg-type]
                lambda: am.Budget.gateway(ttl=-1), lambda: am.Meter(budget="lots"),
                lambda: am.Meter(on_budget_error="maybe")):
        with pytest.raises(am.ConfigError):
            bad()


def _poor(gateway: Any, gpt: openai.OpenAI, tmp_path: Path, flush_interval: float) -> tuple[am.Meter, Any]:
    """A meter whose budget is the gateway's wallets (read afresh for each call), and ``gpt``
    wrapped to bill consumer ``poor`` (a wallet of 120)."""
    meter = am.Meter(API_KEY, api_id="api_test", base_url=gateway.url, flush_interval=flush_interval,
                     budget=am.Budget.gateway(ttl=0, lag=0), ledger_path=str(tmp_path / "l.db"))
    return meter, am.wrap(gpt, meter=meter, consumer_id="poor")


def test_usage_not_delivered_yet_stays_off_the_wallets_balance(wallet_gateway: Any, gpt: openai.OpenAI,
                                                               tmp_path: Path) -> None:
    """The wallet is debited only when the billing API accepts the request: until then (a long
    flush interval here; an outage or a slow API alike) a fresh balance read must not forget the
    settled usage, whatever ``lag`` says."""
    meter, client = _poor(wallet_gateway, gpt, tmp_path, flush_interval=60)
    try:
        r = client.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=60,
                                           extra_headers={"x-mock-output-tokens": "60"})
        assert r.usage is not None
        with pytest.raises(am.BudgetExceededError) as info:  # 68 + 68 would pass the 120
            client.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=60)
        assert info.value.remaining == 120 - r.usage.total_tokens
        assert wallet_gateway.client.wallets()["poor"] == 120  # nothing delivered yet
        assert meter.flush(10)
        assert wallet_gateway.client.wallets()["poor"] == 120 - r.usage.total_tokens
    finally:
        meter.shutdown(5)


def test_usage_the_wallet_refused_is_never_forgotten(wallet_gateway: Any, gpt: openai.OpenAI,
                                                     tmp_path: Path) -> None:
    """A call whose usage passes the wallet (reasoning beyond the estimate) is refused with 402
    and kept as a dead letter: the wallet was never debited, so every later balance read still
    has the usage subtracted, and the consumer is refused instead of served again and again."""
    meter, client = _poor(wallet_gateway, gpt, tmp_path, flush_interval=0.05)
    try:
        r = client.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=20,
                                           extra_headers={"x-mock-reasoning": "500"})
        assert r.usage is not None and r.usage.total_tokens > 120
        assert meter.flush(10)
        assert meter.stats().rejected == 1
        for _ in range(3):  # each a fresh balance read (ttl=0), after the refusal
            with pytest.raises(am.BudgetExceededError) as info:
                client.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=5)
            assert info.value.remaining == 0
        assert wallet_gateway.client.wallets()["poor"] == 120
    finally:
        meter.shutdown(5)


def test_deliveries_of_a_consumer_without_a_wallet_give_no_credit_later(wallet_gateway: Any, gpt: openai.OpenAI,
                                                                        tmp_path: Path) -> None:
    """Usage delivered while the consumer had no wallet says nothing about what is delivered
    after one is set: during an outage of the billing API the consumer is refused once the new
    wallet is spent, not served on credit."""
    meter = am.Meter(API_KEY, api_id="api_test", base_url=wallet_gateway.url, flush_interval=0.05,
                     budget=am.Budget.gateway(ttl=0, lag=0), ledger_path=str(tmp_path / "l.db"))
    client = am.wrap(gpt, meter=meter, consumer_id="carol")
    try:
        for _ in range(5):  # no wallet: unlimited, delivered
            client.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=20)
        assert meter.flush(10)
        wallet_gateway.client.set_wallets({"carol": 100})
        wallet_gateway.client.set_faults(fail_rate=1.0, fail_statuses=[503])  # the log endpoint only
        used = 0
        with pytest.raises(am.BudgetExceededError):
            for _ in range(20):
                r = client.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=20)
                assert r.usage is not None
                used += r.usage.total_tokens
        assert 0 < used <= 100  # refused before the wallet would be passed (nothing delivered)
    finally:
        wallet_gateway.client.set_faults()
        meter.shutdown(5)


def test_usage_a_before_send_hook_drops_is_not_held_against_the_wallet(wallet_gateway: Any, gpt: openai.OpenAI,
                                                                        tmp_path: Path) -> None:
    """Nothing of it will ever be delivered: once the reporter has nothing left for the consumer,
    the next balance read is the wallet as it is (the consumer is not refused for ever)."""
    meter = am.Meter(API_KEY, api_id="api_test", base_url=wallet_gateway.url, flush_interval=0.05,
                     budget=am.Budget.gateway(ttl=0, lag=0), ledger_path=str(tmp_path / "l.db"),
                     before_send=lambda event: None)
    client = am.wrap(gpt, meter=meter, consumer_id="poor")  # a wallet of 120
    try:
        for _ in range(12):  # ~12 x 16 tokens: past the 120 if the dropped usage were held
            client.chat.completions.create(model="gpt-4o-mini", messages=HI, max_tokens=20)
            assert meter.flush(10)
        assert wallet_gateway.client.wallets()["poor"] == 120
    finally:
        meter.shutdown(5)
