"""Shared pieces of the hostile-peer tests: servers, metered SDK clients, spool checks."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

import aerostack_meter as am

KEY = "ac_secret_hostile_key_DO_NOT_LEAK"
API_ID = "api_hostile"


def make_meter(gw: Any, **options: Any) -> am.Meter:
    options.setdefault("flush_interval", 0.05)
    options.setdefault("backoff_base", 0.02)
    options.setdefault("max_backoff", 0.2)
    options.setdefault("instrument", False)
    return am.Meter(KEY, api_id=API_ID, base_url=gw.url, **options)


def clients(llm: Any, meter: am.Meter) -> tuple[Any, Any]:
    oc = am.wrap(openai.OpenAI(base_url=llm.url, api_key="sk-mock", max_retries=0), meter=meter)
    ac = am.wrap(anthropic.Anthropic(base_url=llm.anthropic_base_url, api_key="sk-mock", max_retries=0),
                 meter=meter)
    return oc, ac


def chat(oc: Any, consumer: str, text: str = "hello hostile world", **headers: str) -> Any:
    with am.consumer(consumer):
        return oc.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": text}],
            extra_headers={"x-mock-consumer": consumer, **headers})


def spool_is_sound(path: str) -> int:
    """Every journal under the state directory ``path`` parses without a bad byte; returns the
    events left undelivered in them."""
    from aerostack_meter._journal import recover
    from aerostack_meter._journal_format import parse

    left = 0
    for journal in Path(path).rglob("*.journal"):
        parsed = parse(journal.read_bytes(), final=True)
        assert parsed.bad_bytes == 0, journal
        rec = recover(parsed.records)
        left += len(rec.events) + sum(r.n_events for r in rec.requests)
    return left


def records(caplog: pytest.LogCaptureFixture, *needles: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records
            if r.name.startswith("aerostack_meter") and all(n in r.getMessage() for n in needles)]


def expected(llm: Any) -> dict[str, int]:
    """What the mock LLM returned, per consumer, in the meter's default unit ("tokens")."""
    return {c: int(v["total_tokens"]) for c, v in llm.usage()["by_consumer"].items()}
