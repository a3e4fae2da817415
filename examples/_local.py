"""Shared by the examples: use the servers named in the environment, or start local ones.

Each example reads ``OPENAI_BASE_URL`` / ``ANTHROPIC_BASE_URL`` / ``GOOGLE_GEMINI_BASE_URL`` /
``AWS_ENDPOINT_URL_BEDROCK_RUNTIME`` (read by the SDKs themselves), ``MISTRAL_SERVER_URL`` and
``AEROSTACK_BASE_URL`` / ``AEROSTACK_API_KEY`` (read by ``aerostack_meter.init()``). Whatever is
absent is started here, in-process: the mock LLM server and the gateway emulator from
``aerostack_meter.servers`` (install the ``servers`` extra). So ``python examples/X.py`` runs
offline on a fresh machine, and the same script runs against the real services when the
environment names them.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping

import httpx

from aerostack_meter.servers import (
    GatewayClient,
    GatewayHandle,
    MockLLMHandle,
    start_gateway,
    start_mock_llm,
)

__all__ = ["billed", "local_servers", "print_split", "print_tokens"]

_LLM_URLS = ("OPENAI_BASE_URL", "ANTHROPIC_BASE_URL", "GOOGLE_GEMINI_BASE_URL",
             "AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "MISTRAL_SERVER_URL")


@contextlib.contextmanager
def local_servers() -> Iterator[None]:
    """Start whatever the environment does not name, and point the environment at it."""
    started: list[MockLLMHandle | GatewayHandle] = []
    try:
        if not all(os.environ.get(name) for name in _LLM_URLS):
            llm = start_mock_llm()
            started.append(llm)
            for name, value in (
                ("OPENAI_BASE_URL", llm.url),
                ("ANTHROPIC_BASE_URL", llm.anthropic_base_url),
                ("GOOGLE_GEMINI_BASE_URL", llm.base_url),  # read by google-genai
                ("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", llm.base_url),  # read by botocore
                ("MISTRAL_SERVER_URL", llm.base_url),  # read by the Mistral example
                ("OPENAI_API_KEY", "sk-local-mock"),
                ("ANTHROPIC_API_KEY", "sk-ant-local-mock"),
                ("GEMINI_API_KEY", "local-mock"),
                ("MISTRAL_API_KEY", "local-mock"),
                ("AWS_ACCESS_KEY_ID", "AKIDLOCALMOCK"),
                ("AWS_SECRET_ACCESS_KEY", "local-mock"),
                ("AWS_DEFAULT_REGION", "us-east-1"),
            ):
                os.environ.setdefault(name, value)
        if not os.environ.get("AEROSTACK_BASE_URL"):
            key = os.environ.setdefault("AEROSTACK_API_KEY", "ac_local_demo_key")
            gateway = start_gateway(keys=[key])
            started.append(gateway)
            os.environ["AEROSTACK_BASE_URL"] = gateway.url
        yield
    finally:
        for server in reversed(started):
            server.stop()


def billed() -> dict[str, dict[str, int]] | None:
    """``{consumer: {metric: units}}`` as the gateway emulator recorded it, or ``None`` when the
    gateway is not the emulator (the real billing API has no totals endpoint)."""
    try:
        with GatewayClient(os.environ["AEROSTACK_BASE_URL"], timeout=5) as client:
            rows = client.totals()
    except (httpx.HTTPError, KeyError, ValueError):
        return None
    out: dict[str, dict[str, int]] = {}
    for row in rows:
        metrics = out.setdefault(row["consumerId"], {})
        metrics[row["metric"]] = metrics.get(row["metric"], 0) + int(row["units"])
    return out


def print_tokens(reported: Mapping[str, int], users: Iterable[str]) -> None:
    """One line per user: the tokens the API reported and, with the emulator, the tokens billed."""
    totals = billed()
    for user in users:
        line = f"{user}: {reported[user]} tokens reported by the API"
        if totals is not None:
            line += f", {totals.get(user, {}).get('tokens', 0)} billed"
        print(line)


def print_split(reported: Mapping[str, int], users: Iterable[str]) -> None:
    """``print_tokens`` for the "split" policy: the billed total and its metrics, per user."""
    totals = billed()
    for user in users:
        line = f"{user}: {reported[user]} tokens reported by the API"
        if totals is not None:
            parts = totals.get(user, {})
            detail = ", ".join(f"{metric}={units}" for metric, units in sorted(parts.items()))
            line += f", {sum(parts.values())} billed ({detail})"
        print(line)
