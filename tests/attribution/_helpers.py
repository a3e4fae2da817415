"""Shared bits of the attribution suite: real SDK calls against the mock LLM server."""

from __future__ import annotations

from typing import Any

import openai
from openai.types.chat import ChatCompletionMessageParam

import aerostack_meter as am

MODEL = "gpt-4o-mini"


def prompt(n: int) -> list[ChatCompletionMessageParam]:
    """A one-message chat whose prompt is ``n`` words (the mock counts ``n + 3`` input tokens)."""
    return [{"role": "user", "content": " ".join(["w"] * n)}]


def chat(client: openai.OpenAI, n: int = 5, *, headers: dict[str, str] | None = None, **kw: Any) -> int:
    """One metered chat call; returns the total tokens the server reported for it."""
    r = client.chat.completions.create(model=MODEL, messages=prompt(n), extra_headers=headers, **kw)
    assert r.usage is not None
    return int(r.usage.total_tokens)


async def achat(client: openai.AsyncOpenAI, n: int = 5, **kw: Any) -> int:
    r = await client.chat.completions.create(model=MODEL, messages=prompt(n), **kw)
    assert r.usage is not None
    return int(r.usage.total_tokens)


def rows(gateway: Any) -> dict[tuple[str, str, str], int]:
    """Flush, then the gateway's units per (consumer, api, metric)."""
    assert am.flush(10), "flush timed out"
    return {(r["consumerId"], r["apiId"], r["metric"]): int(r["units"]) for r in gateway.client.totals()}
