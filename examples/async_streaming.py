"""Many users streaming at once from one asyncio process, each billed for their own tokens.

    python examples/async_streaming.py

``consumer()`` is built on contextvars: a scope entered in a task covers that task only, and it
follows ``asyncio.to_thread``. A plain thread pool does not inherit it: wrap the callable with
``aerostack_meter.carry_consumer``. Offline by default; set OPENAI_BASE_URL, OPENAI_API_KEY,
AEROSTACK_BASE_URL and AEROSTACK_API_KEY to use the real services.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import openai
from _local import local_servers, print_tokens

import aerostack_meter

MODEL = os.environ.get("OPENAI_MODEL", "gpt-4o-mini")
USERS = [f"usr_{i:02d}" for i in range(12)]

reported: Counter[str] = Counter()


async def stream_answer(client: openai.AsyncOpenAI, user: str, question: str) -> str:
    async with aerostack_meter.consumer(user):
        stream = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": question}], stream=True,
            stream_options={"include_usage": True})
        parts = []
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
            if chunk.usage is not None:
                reported[user] += chunk.usage.total_tokens
        return "".join(parts)


def summarise(user: str, text: str) -> None:
    """Blocking code (a sync SDK client) run off the event loop; billed to the current consumer."""
    sync_client = openai.OpenAI()
    response = sync_client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": f"Summarise: {text}"}])
    assert aerostack_meter.current_consumer() == user
    if response.usage is not None:
        reported[user] += response.usage.total_tokens


async def main() -> None:
    aerostack_meter.init(api_id=os.environ.get("AEROSTACK_API_ID", "api_streaming"))
    client = openai.AsyncOpenAI()
    answers = await asyncio.gather(*(
        stream_answer(client, user, f"Tell {user} {'more ' * i}about numbers")
        for i, user in enumerate(USERS)))

    # asyncio.to_thread copies the context: the scope follows.
    async with aerostack_meter.consumer(USERS[0]):
        await asyncio.to_thread(summarise, USERS[0], answers[0])
    # A thread pool does not: carry_consumer binds the current scope to the callable.
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(4) as pool:
        async with aerostack_meter.consumer(USERS[1]):
            await loop.run_in_executor(pool, aerostack_meter.carry_consumer(summarise), USERS[1], answers[1])
    await client.close()
    await aerostack_meter.aflush(10)

    print_tokens(reported, USERS)
    aerostack_meter.shutdown()


if __name__ == "__main__":
    with local_servers():
        asyncio.run(main())
