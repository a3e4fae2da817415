"""Many consumers at once: every call's usage is billed to its own consumer, exactly."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from typing import Any

import openai

import aerostack_meter as am
from tests.conftest import billed

from ._helpers import MODEL, prompt


async def test_200_asyncio_tasks_each_with_its_own_consumer(meter: am.Meter, gateway: Any,
                                                            mock_llm: Any) -> None:
    client = openai.AsyncOpenAI(base_url=mock_llm.url, api_key="x")
    returned: Counter[str] = Counter()

    async def task(i: int) -> None:
        cid = f"task{i}"
        async with am.consumer(cid):
            await asyncio.sleep(0.001 * (i % 5))  # scramble the order the tasks call in
            if i % 2:
                r = await client.chat.completions.create(model=MODEL, messages=prompt(i % 17))
                assert r.usage is not None
                returned[cid] += r.usage.total_tokens
            else:
                stream = await client.chat.completions.create(
                    model=MODEL, messages=prompt(i % 13 + 1), stream=True,
                    stream_options={"include_usage": True})
                async for chunk in stream:
                    await asyncio.sleep(0)  # other tasks run while this stream is open
                    if chunk.usage is not None:
                        returned[cid] += chunk.usage.total_tokens
            assert am.current_consumer() == cid

    await asyncio.gather(*(task(i) for i in range(200)))
    await client.close()
    assert len(returned) == 200
    assert billed(gateway) == dict(returned)
    assert meter.stats().calls_metered == 200


def test_32_threads_each_with_its_own_consumer(meter: am.Meter, gateway: Any, mock_llm: Any) -> None:
    client = openai.OpenAI(base_url=mock_llm.url, api_key="x")
    returned: Counter[str] = Counter()
    lock = threading.Lock()
    start = threading.Barrier(32)

    def worker(i: int) -> None:
        cid = f"thread{i}"
        start.wait(10)
        with am.consumer(cid):
            for k in range(3):
                r = client.chat.completions.create(model=MODEL, messages=prompt(i + k))
                assert r.usage is not None
                with lock:
                    returned[cid] += r.usage.total_tokens

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(returned) == 32
    assert billed(gateway) == dict(returned)
    assert "default" not in returned
