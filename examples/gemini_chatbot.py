"""A Gemini chatbot serving several users through chat sessions (one streamed reply each), billed
per user. Gemini's thinking tokens are output that is not in ``candidates_token_count``: the bill
is the provider's ``total_token_count``, thinking counted once.

    python examples/gemini_chatbot.py

Offline by default (a local mock LLM and gateway emulator); set GOOGLE_GEMINI_BASE_URL (or leave it
unset with a real key), GEMINI_API_KEY, AEROSTACK_BASE_URL and AEROSTACK_API_KEY to run it against
the real services.
"""

from __future__ import annotations

import os
from collections import Counter

from _local import local_servers, print_tokens
from google import genai

import aerostack_meter

MODEL = os.environ.get("GEMINI_MODEL", "gemini-2.5-flash")

CONVERSATIONS = {
    "usr_fatima": ["What is a token bucket?", "And a leaky bucket?"],
    "usr_gus": ["Name three rivers in Europe."],
}


def main() -> None:
    aerostack_meter.init(api_id=os.environ.get("AEROSTACK_API_ID", "api_gemini_bot"))
    client = genai.Client(api_key=os.environ["GEMINI_API_KEY"])
    reported: Counter[str] = Counter()
    for user, questions in CONVERSATIONS.items():
        chat = client.chats.create(model=MODEL)
        with aerostack_meter.consumer(user):
            for i, question in enumerate(questions):
                if i % 2:  # streamed: every chunk has the usage so far; the last one the total
                    last = None
                    for chunk in chat.send_message_stream(question):
                        last = chunk.usage_metadata or last
                    usage = last
                else:
                    usage = chat.send_message(question).usage_metadata
                assert usage is not None
                reported[user] += usage.total_token_count or 0
    aerostack_meter.flush(10)
    print_tokens(reported, CONVERSATIONS)
    aerostack_meter.shutdown()


if __name__ == "__main__":
    with local_servers():
        main()
