"""A chatbot serving several users, each billed for their own OpenAI tokens.

    python examples/openai_chatbot.py

Offline by default (a local mock LLM and gateway emulator); set OPENAI_BASE_URL, OPENAI_API_KEY,
AEROSTACK_BASE_URL and AEROSTACK_API_KEY to run it against the real services.
"""

from __future__ import annotations

import os
from collections import Counter

import openai
from _local import local_servers, print_tokens
from openai.types.chat import ChatCompletionMessageParam

import aerostack_meter

MODEL = os.environ.get("OPENAI_MODEL", "gpt-4o-mini")

CONVERSATIONS = {
    "usr_alice": ["What is a token?", "And how are tokens billed?"],
    "usr_bob": ["Write a haiku about invoices."],
    "usr_carol": ["Summarise the plot of Hamlet in one line.", "Now in five words.", "Thanks!"],
}


def reply(client: openai.OpenAI, history: list[ChatCompletionMessageParam], question: str, *,
          stream: bool) -> tuple[str, int]:
    """Ask one question; returns the answer and the tokens the API reported for it."""
    history.append({"role": "user", "content": question})
    if stream:
        chunks = client.chat.completions.create(
            model=MODEL, messages=history, stream=True, stream_options={"include_usage": True})
        parts, used = [], 0
        for chunk in chunks:
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
            if chunk.usage is not None:
                used = chunk.usage.total_tokens
        answer = "".join(parts)
    else:
        response = client.chat.completions.create(model=MODEL, messages=history)
        answer = response.choices[0].message.content or ""
        used = response.usage.total_tokens if response.usage else 0
    history.append({"role": "assistant", "content": answer})
    return answer, used


def main() -> None:
    aerostack_meter.init(api_id=os.environ.get("AEROSTACK_API_ID", "api_chatbot"))
    client = openai.OpenAI()  # instrumented by init(): nothing else to change
    reported: Counter[str] = Counter()
    for user, questions in CONVERSATIONS.items():
        history: list[ChatCompletionMessageParam] = []
        with aerostack_meter.consumer(user):  # every call in here is billed to this user
            for i, question in enumerate(questions):
                _, used = reply(client, history, question, stream=i % 2 == 1)
                reported[user] += used
    aerostack_meter.flush(10)

    print_tokens(reported, CONVERSATIONS)
    aerostack_meter.shutdown()


if __name__ == "__main__":
    with local_servers():
        main()
