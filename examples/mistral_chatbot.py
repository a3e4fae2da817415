"""A Mistral chatbot serving several users, one of them over an async stream, billed per user.
Mistral sends a stream's usage on its last event.

    python examples/mistral_chatbot.py

Offline by default (a local mock LLM and gateway emulator); set MISTRAL_SERVER_URL (or leave it
unset), MISTRAL_API_KEY, AEROSTACK_BASE_URL and AEROSTACK_API_KEY to run it against the real
services.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from typing import Any

from _local import local_servers, print_tokens

import aerostack_meter

try:  # mistralai 2.x and later
    from mistralai.client import Mistral
except ImportError:  # 1.x
    from mistralai import Mistral  # type: ignore[attr-defined,no-redef]

MODEL = os.environ.get("MISTRAL_MODEL", "mistral-small-latest")

QUESTIONS = {"usr_jo": "Why is the sky blue?", "usr_kim": "Summarise the plot of Hamlet."}


async def ask_streamed(client: Any, question: str) -> int:
    total = 0
    async for event in await client.chat.stream_async(
            model=MODEL, messages=[{"role": "user", "content": question}]):
        if event.data.usage is not None:
            total = event.data.usage.total_tokens
    return total


def main() -> None:
    aerostack_meter.init(api_id=os.environ.get("AEROSTACK_API_ID", "api_mistral_bot"))
    server_url = os.environ.get("MISTRAL_SERVER_URL") or None
    client = Mistral(api_key=os.environ["MISTRAL_API_KEY"], server_url=server_url)
    reported: Counter[str] = Counter()
    with aerostack_meter.consumer("usr_jo"):
        reply = client.chat.complete(model=MODEL, messages=[{"role": "user", "content": QUESTIONS["usr_jo"]}])
        reported["usr_jo"] += reply.usage.total_tokens or 0
    with aerostack_meter.consumer("usr_kim"):  # the scope follows the coroutine
        reported["usr_kim"] += asyncio.run(ask_streamed(client, QUESTIONS["usr_kim"]))
    aerostack_meter.flush(10)
    print_tokens(reported, QUESTIONS)
    aerostack_meter.shutdown()


if __name__ == "__main__":
    with local_servers():
        main()
