"""Frameworks chatbots are built with, against the mock LLM: each one's calls billed exactly, once,
to the right consumer, with the framework's output unchanged. Test-only dependencies
(tests/frameworks/requirements.txt, installed by .ci/run); a framework not installed is skipped."""

from __future__ import annotations

import asyncio
import gc
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import aerostack_meter as am
from tests.conftest import billed

# litellm fetches a model price map from the internet when imported: keep it on its bundled copy.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
# The OpenAI Agents SDK exports traces to OpenAI by default: never from the tests.
os.environ.setdefault("OPENAI_AGENTS_DISABLE_TRACING", "1")

USER = "tell me about the quiet harbour town"


def served(llm: Any) -> int:
    """Tokens the mock LLM has reported in usage so far (its own tally)."""
    return int(llm.usage()["total"]["total_tokens"])


class Run:
    """One metered run of a framework flow, with what the server reported and what was billed."""

    def __init__(self, llm: Any, gateway: Any, meter_factory: Callable[..., Any]) -> None:
        self.llm = llm
        self.gateway = gateway
        self.meter_factory = meter_factory

    def init(self) -> None:
        self.meter_factory(flush_interval=0.01)

    def billed(self, calls: int = 0) -> dict[str, int]:
        """What the gateway billed, once at least ``calls`` calls were metered (litellm reports a
        call's success on its own worker thread, a moment after the call returned)."""
        deadline = time.monotonic() + 10
        while calls and time.monotonic() < deadline:
            st = am.stats()
            if st.calls_metered + st.usage_missing >= calls:
                break
            time.sleep(0.02)
        return billed(self.gateway)

    async def settle(self, calls: int) -> None:
        """``billed(calls=...)`` for a test on an event loop: litellm's async success callbacks
        run as tasks on this loop, so wait without blocking it."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            st = am.stats()
            if st.calls_metered + st.usage_missing >= calls:
                return
            await asyncio.sleep(0.02)

    def stats(self) -> Any:
        assert am.flush(10)
        return am.stats()


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    """Collect what each test dropped (the frameworks' clients, abandoned streams) now, not inside
    some later import: CPython 3.11 before 3.11.9 can fail compile() when the GC runs Python
    finalizers in the middle of it (gh-106905)."""
    yield
    gc.collect()


@pytest.fixture
def run(mock_llm: Any, gateway: Any, meter_factory: Any) -> Iterator[Run]:
    yield Run(mock_llm, gateway, meter_factory)


def unmetered() -> None:
    """Remove every patch (for the baseline a metered run must match)."""
    am.uninstrument()


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    """The frameworks' own import-time warnings (pydantic on their TypedDicts, ...) are theirs,
    not failures of ours: ignored in this directory only."""
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.filterwarnings("ignore::UserWarning"))
