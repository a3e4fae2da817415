"""``aerostack-meter demo``: a multi-consumer chatbot, metered end to end, offline.

Starts the gateway emulator and the mock LLM server in-process on free loopback ports, runs a short
chatbot for three consumers (OpenAI sync and streamed, Anthropic async and through the stream
helper) through ``init()`` and ``consumer()`` scopes, flushes, prints the gateway's table, and ends
with one check line comparing the gateway's totals with the usage the SDKs returned. Exit code 0
only when they are equal.

With ``--real`` (and ``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``, ``AEROSTACK_API_KEY`` set) the same
chatbot runs against the real services instead.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import aerostack_meter as am

DEMO_KEY = "ac_secret_demo_local"
API_ID = "api_demo_chatbot"

CONVERSATIONS = {
    "usr_alice": ["What is metering?", "And why per consumer?"],
    "usr_bob": ["Write a haiku about tokens.", "Now one about invoices."],
    "usr_carol": ["Summarise our billing model in one line."],
}


def _openai_turns(client: Any, consumer: str, prompts: list[str], model: str, used: Counter[str]) -> None:
    with am.consumer(consumer):
        for i, prompt in enumerate(prompts):
            messages = [{"role": "user", "content": prompt}]
            if i % 2 == 0:
                reply = client.chat.completions.create(model=model, messages=messages)
                used[consumer] += reply.usage.total_tokens
                text = reply.choices[0].message.content or ""
            else:  # streamed; the user asks for usage, so it is visible to both of us
                parts = []
                stream = client.chat.completions.create(model=model, messages=messages, stream=True,
                                                        stream_options={"include_usage": True})
                for chunk in stream:
                    if chunk.usage is not None:
                        used[consumer] += chunk.usage.total_tokens
                    if chunk.choices and chunk.choices[0].delta.content:
                        parts.append(chunk.choices[0].delta.content)
                text = "".join(parts)
            print(f"  [openai    {consumer:>9}] {prompt!r} -> {text[:48]!r}")


def _anthropic_total(usage: Any) -> int:
    return int(usage.input_tokens + (usage.cache_creation_input_tokens or 0)
               + (usage.cache_read_input_tokens or 0) + usage.output_tokens)


async def _anthropic_turns(client: Any, consumer: str, prompts: list[str], model: str,
                           used: Counter[str]) -> None:
    async with am.consumer(consumer):
        for i, prompt in enumerate(prompts):
            messages = [{"role": "user", "content": prompt}]
            if i % 2 == 0:
                msg = await client.messages.create(model=model, max_tokens=64, messages=messages)
                used[consumer] += _anthropic_total(msg.usage)
                text = "".join(b.text for b in msg.content if getattr(b, "type", "") == "text")
            else:  # the stream helper
                async with client.messages.stream(model=model, max_tokens=64, messages=messages) as s:
                    text = "".join([t async for t in s.text_stream])
                    final = await s.get_final_message()
                used[consumer] += _anthropic_total(final.usage)
            print(f"  [anthropic {consumer:>9}] {prompt!r} -> {text[:48]!r}")


def run(openai_client: Any, anthropic_client: Any, *, openai_model: str, anthropic_model: str) -> Counter[str]:
    """The chatbot itself: returns the tokens each consumer used, as the SDKs reported them."""
    used: Counter[str] = Counter()
    for consumer, prompts in CONVERSATIONS.items():
        _openai_turns(openai_client, consumer, prompts, openai_model, used)

    async def both() -> None:
        await asyncio.gather(*(_anthropic_turns(anthropic_client, c, p, anthropic_model, used)
                               for c, p in CONVERSATIONS.items()))

    asyncio.run(both())
    return used


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aerostack-meter demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--real", action="store_true",
                        help="use the real OpenAI, Anthropic and Aerostack services (keys from the environment)")
    ns = parser.parse_args(argv)
    from .cli import missing_extras

    problem = missing_extras("demo")
    if problem is not None:
        print(problem, file=sys.stderr)
        return 2
    import anthropic
    import openai

    t0 = time.monotonic()
    if ns.real:
        return _real(openai, anthropic)

    from ._report import format_totals
    from .servers import start_gateway, start_mock_llm

    print("aerostack-meter demo: local gateway emulator + mock LLM server, no network, no keys")
    # The emulator's database is kept after the demo (a fresh one each run), for the dashboard.
    db_path = os.path.join(tempfile.mkdtemp(prefix="aerostack-demo-"), "gateway.db")
    with start_gateway(keys=[DEMO_KEY], db_path=db_path) as gateway, start_mock_llm() as llm:
        print(f"  gateway  {gateway.url}\n  mock LLM {llm.url}\n")
        am.init(DEMO_KEY, api_id=API_ID, base_url=gateway.url, flush_interval=0.1)
        try:
            oa = openai.OpenAI(base_url=llm.url, api_key="sk-local-demo", max_retries=0)
            an = anthropic.AsyncAnthropic(base_url=llm.url.removesuffix("/v1"), api_key="sk-ant-local-demo",
                                          max_retries=0)
            used = run(oa, an, openai_model="gpt-4o-mini", anthropic_model="claude-sonnet-4-5")
            delivered = am.flush(10)
            stats = am.stats()
        finally:
            am.shutdown()
            am.uninstrument()
        rows = gateway.client.totals()
        print()
        print(format_totals(rows, title="Usage logged at the gateway (POST /v1/gateway/billing/log):",
                            requests=True))
        billed = gateway.client.totals_by_consumer()
    ok = delivered and dict(billed) == dict(used)
    pairs = ", ".join(f"{c} {billed.get(c, 0)}={used[c]}" for c in sorted(used))
    print(f"{stats.requests_sent} billing requests for {stats.events_sent} events in "
          f"{time.monotonic() - t0:.1f} s")
    print(f"check: gateway totals {'==' if ok else '!='} SDK-reported usage ({pairs}): "
          f"{'OK' if ok else 'MISMATCH'}")
    print("\nSee it in the dashboard (needs the dashboard extra), then open the URL it prints:")
    print(f"  aerostack-meter dashboard --ledger {db_path}")
    return 0 if ok else 1


def _real(openai: Any, anthropic: Any) -> int:  # pragma: no cover - needs the real services
    missing = [k for k in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AEROSTACK_API_KEY") if not os.environ.get(k)]
    if missing:
        print(f"--real needs {', '.join(missing)} in the environment", file=sys.stderr)
        return 2
    am.init(api_id=os.environ.get("AEROSTACK_API_ID", API_ID))
    used = run(openai.OpenAI(), anthropic.AsyncAnthropic(),
               openai_model=os.environ.get("DEMO_OPENAI_MODEL", "gpt-4o-mini"),
               anthropic_model=os.environ.get("DEMO_ANTHROPIC_MODEL", "claude-haiku-4-5"))
    ok = am.flush(30)
    print(f"reported {dict(used)} to the Aerostack billing API: {'delivered' if ok else 'NOT all delivered'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
