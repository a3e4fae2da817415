"""Prepaid credits: bill in money and stop a consumer whose wallet is empty, before the LLM is paid.

    pip install -e '.[all,servers,cost]'   # the [cost] extra prices the answers
    python examples/prepaid_credits.py

Each answer is billed at its price in micro-USD (``metrics="cost"``, the ``[cost]`` extra) and
debited from the consumer's wallet at the billing API. Before each call the meter reserves the
answer's worst case against that wallet (``Budget.gateway(unit="cost")``). A consumer whose
wallet cannot cover it is refused before anything is sent, and the chatbot shows a message
instead of an answer. Offline by default: the gateway emulator holds the wallets and the mock
LLM answers. Set OPENAI_BASE_URL, OPENAI_API_KEY, AEROSTACK_BASE_URL and AEROSTACK_API_KEY to use
real services.
"""

from __future__ import annotations

import os

import openai
from _local import local_servers
from openai.types.chat import ChatCompletionMessageParam

import aerostack_meter
from aerostack_meter import Budget, BudgetExceededError
from aerostack_meter.servers import GatewayClient

MODEL = "gpt-4o"
MAX_TOKENS = 300
WALLETS = {"usr_trial": 15_000, "usr_paid": 1_000_000}  # micro-USD: $0.015 and $1.00
QUESTIONS = ["What is a token?", "And a context window?", "Why do answers cost money?",
             "How do I top up?", "Thanks, one last thing: what is a budget?"]


def dollars(micro_usd: int | None) -> str:
    return "an unknown amount" if micro_usd is None else f"${micro_usd / 1_000_000:.4f}"


def answer(client: openai.OpenAI, user: str, history: list[ChatCompletionMessageParam], question: str) -> str:
    """One chatbot turn: the model's answer, or a message the user can act on."""
    history.append({"role": "user", "content": question})
    try:
        with aerostack_meter.consumer(user):
            reply = client.chat.completions.create(
                model=MODEL, messages=history, max_tokens=MAX_TOKENS,
                extra_headers={"x-mock-output-tokens": "200"})  # the mock LLM's answer length
    except BudgetExceededError as exc:
        history.pop()
        return (f"Sorry, your balance ({dollars(exc.remaining)}) cannot cover this answer "
                f"(up to {dollars(exc.needed)}). Please top up your credits to continue.")
    text = reply.choices[0].message.content or ""
    history.append({"role": "assistant", "content": text})
    return text


def main() -> None:
    with local_servers():
        gateway = GatewayClient(os.environ["AEROSTACK_BASE_URL"])
        gateway.set_wallets(WALLETS)  # the emulator's control API: fund the wallets
        aerostack_meter.init(api_id="api_prepaid_demo", metrics="cost",
                             budget=Budget.gateway(ttl=0, unit="cost"))
        client = openai.OpenAI()
        for user in WALLETS:
            history: list[ChatCompletionMessageParam] = []
            answered = 0
            for turn, question in enumerate(QUESTIONS, 1):
                text = answer(client, user, history, question)
                refused = text.startswith("Sorry, your balance")
                print(f"{user} turn {turn}: {'REFUSED: ' + text if refused else f'answered ({len(text.split())} words)'}")
                if refused:
                    break
                answered += 1
            aerostack_meter.flush()
            left = gateway.wallets()[user]
            spent = WALLETS[user] - left
            print(f"{user}: {answered} of {len(QUESTIONS)} turns answered, {spent} micro-USD billed, "
                  f"{left} left in the wallet")
        stats = aerostack_meter.stats()
        print(f"refused before sending: {stats.budget_refused}; price table: {stats.price_table}")
        aerostack_meter.shutdown()
        gateway.close()


if __name__ == "__main__":
    main()
