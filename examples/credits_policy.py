"""Bill credits weighted by each model's price instead of raw tokens: a custom metric policy.

    python examples/credits_policy.py

A policy is any callable ``usage -> {metric: units}``; it runs on the meter's background thread,
and its units must be non-negative integers (anything else is dropped, logged and counted in
``stats().dropped``, never raised into your LLM call). The price table lives here, in your code:
the library ships none. Offline by default; set OPENAI_BASE_URL, OPENAI_API_KEY,
AEROSTACK_BASE_URL and AEROSTACK_API_KEY to use the real services.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass

import openai
from _local import billed, local_servers

import aerostack_meter


@dataclass(frozen=True)
class Price:
    """USD per million tokens, which is the same number as micro-USD per token."""

    input: float
    cached_input: float
    output: float
    cache_write: float | None = None  # None: priced as input


# Illustrative prices only: keep your own table current.
PRICES = {
    "gpt-4o-mini": Price(input=0.15, cached_input=0.075, output=0.60),
    "gpt-4o": Price(input=2.50, cached_input=1.25, output=10.00),
    "claude-haiku-4-5": Price(input=1.00, cached_input=0.10, output=5.00, cache_write=1.25),
}
# Unknown models are priced like the most expensive one: never bill less than it cost.
FALLBACK = max(PRICES.values(), key=lambda p: p.output)
CREDITS_PER_MICRO_USD = 1  # 1 credit = 1 micro-dollar


def price_for(model: str | None) -> Price:
    if model is None:
        return FALLBACK
    for name, price in PRICES.items():  # "gpt-4o-mini-2024-07-18" is priced as "gpt-4o-mini"
        if model == name or model.startswith(name + "-"):
            return price
    return FALLBACK


def micro_usd(model: str | None, fresh_input: int, cached: int, cache_write: int, output: int) -> float:
    p = price_for(model)
    write = p.input if p.cache_write is None else p.cache_write
    return fresh_input * p.input + cached * p.cached_input + cache_write * write + output * p.output


def credits(usage: aerostack_meter.Usage) -> dict[str, int]:
    """The metric policy: the normalised usage's input includes the cache parts, so take them out."""
    fresh = usage.input_tokens - usage.cached_input_tokens - usage.cache_write_tokens
    cost = micro_usd(usage.model, fresh, usage.cached_input_tokens, usage.cache_write_tokens,
                     usage.output_tokens)
    return {"credits": math.ceil(cost * CREDITS_PER_MICRO_USD)}  # an int, rounded up


def main() -> None:
    aerostack_meter.init(api_id=os.environ.get("AEROSTACK_API_ID", "api_credits_demo"), metrics=credits)
    client = openai.OpenAI()
    expected: Counter[str] = Counter()
    jobs = [("usr_free", "gpt-4o-mini", "Say hello"),
            ("usr_pro", "gpt-4o", "Draft a two line release note for version 2.0 of our app"),
            ("usr_pro", "gpt-4o-mini", "Now shorter")]
    for user, model, question in jobs:
        with aerostack_meter.consumer(user):
            r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": question}])
        u = r.usage
        assert u is not None
        # The same arithmetic from the raw OpenAI fields: prompt_tokens include the cached ones.
        cached = (u.prompt_tokens_details.cached_tokens or 0) if u.prompt_tokens_details else 0
        expected[user] += math.ceil(micro_usd(r.model, u.prompt_tokens - cached, cached, 0,
                                              u.completion_tokens))
    aerostack_meter.flush(10)

    totals = billed()
    for user in sorted(expected):
        line = f"{user}: {expected[user]} credits expected"
        if totals is not None:
            line += f", {totals.get(user, {}).get('credits', 0)} billed"
        print(line)
    aerostack_meter.shutdown()


if __name__ == "__main__":
    with local_servers():
        main()
