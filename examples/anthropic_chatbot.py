"""A Claude chatbot serving several users, billed per user with the "split" metric policy
(fresh input, cached input, cache writes and output as separate metrics).

    python examples/anthropic_chatbot.py

Offline by default (a local mock LLM and gateway emulator); set ANTHROPIC_BASE_URL,
ANTHROPIC_API_KEY, AEROSTACK_BASE_URL and AEROSTACK_API_KEY to run it against the real services.
"""

from __future__ import annotations

import os
from collections import Counter

import anthropic
from _local import local_servers, print_split
from anthropic.types import Message, MessageParam, Usage

import aerostack_meter

MODEL = os.environ.get("ANTHROPIC_MODEL", "claude-haiku-4-5")
SYSTEM = "You are a concise assistant for a billing product."

CONVERSATIONS = {
    "usr_dana": ["Explain prompt caching in one sentence.", "Why is it cheaper?"],
    "usr_erik": ["Name three prime numbers."],
}


def normalised_input(u: Usage) -> int:
    """Anthropic's input_tokens exclude the cache: the whole input adds the cache reads and writes."""
    return u.input_tokens + (u.cache_creation_input_tokens or 0) + (u.cache_read_input_tokens or 0)


def main() -> None:
    aerostack_meter.init(api_id=os.environ.get("AEROSTACK_API_ID", "api_claude_bot"), metrics="split")
    client = anthropic.Anthropic()
    reported: Counter[str] = Counter()
    for user, questions in CONVERSATIONS.items():
        history: list[MessageParam] = []
        with aerostack_meter.consumer(user):
            for i, question in enumerate(questions):
                message: Message
                history.append({"role": "user", "content": question})
                if i % 2:  # the stream() helper: metered from its final message when the block exits
                    with client.messages.stream(model=MODEL, max_tokens=200, system=SYSTEM,
                                                messages=history) as stream:
                        message = stream.get_final_message()
                else:
                    message = client.messages.create(model=MODEL, max_tokens=200, system=SYSTEM,
                                                     messages=history)
                text = "".join(block.text for block in message.content if block.type == "text")
                history.append({"role": "assistant", "content": text})
                reported[user] += normalised_input(message.usage) + message.usage.output_tokens
    aerostack_meter.flush(10)

    print_split(reported, CONVERSATIONS)
    aerostack_meter.shutdown()


if __name__ == "__main__":
    with local_servers():
        main()
