"""A chatbot on AWS Bedrock serving several users with ``converse`` and ``converse_stream``,
billed per user with the "split" policy (fresh input, cache reads and writes, output apart).
Bedrock's ``inputTokens`` leave the prompt cache out; ``totalTokens`` include it.

    python examples/bedrock_chatbot.py

Offline by default (a local mock LLM and gateway emulator); set AWS_ENDPOINT_URL_BEDROCK_RUNTIME
(or leave it unset), AWS credentials and region, AEROSTACK_BASE_URL and AEROSTACK_API_KEY to run
it against the real services.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import boto3
from _local import local_servers, print_split

import aerostack_meter

MODEL = os.environ.get("BEDROCK_MODEL", "anthropic.claude-3-5-haiku-20241022-v1:0")
SYSTEM = [{"text": "You are a concise assistant."}]

CONVERSATIONS = {
    "usr_hana": ["What is an inference profile?", "Is it regional?"],
    "usr_ivo": ["Give me a haiku about invoices."],
}


def main() -> None:
    aerostack_meter.init(api_id=os.environ.get("AEROSTACK_API_ID", "api_bedrock_bot"), metrics="split")
    client = boto3.client("bedrock-runtime")  # built after init(): metered
    reported: Counter[str] = Counter()
    for user, questions in CONVERSATIONS.items():
        messages: list[dict[str, Any]] = []
        with aerostack_meter.consumer(user):
            for i, question in enumerate(questions):
                messages.append({"role": "user", "content": [{"text": question}]})
                if i % 2:  # streamed: the usage arrives in the final metadata event
                    text, usage = "", None
                    for event in client.converse_stream(modelId=MODEL, messages=messages,
                                                        system=SYSTEM)["stream"]:
                        if "contentBlockDelta" in event:
                            text += event["contentBlockDelta"]["delta"].get("text", "")
                        if "metadata" in event:
                            usage = event["metadata"]["usage"]
                else:
                    response = client.converse(modelId=MODEL, messages=messages, system=SYSTEM)
                    text = response["output"]["message"]["content"][0]["text"]
                    usage = response["usage"]
                assert usage is not None
                messages.append({"role": "assistant", "content": [{"text": text}]})
                reported[user] += usage["totalTokens"]
    aerostack_meter.flush(10)

    print_split(reported, CONVERSATIONS)
    aerostack_meter.shutdown()


if __name__ == "__main__":
    with local_servers():
        main()
