from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import openai
import pytest


@pytest.fixture(autouse=True)
def collect_clients() -> Iterator[None]:
    """Collect each test's SDK clients (their finalizers run Python) now, not inside a later
    compile(): CPython 3.11 before 3.11.9 then fails with "AST constructor recursion depth
    mismatch" (gh-106905; see tests/providers/_openai_support.py)."""
    yield
    gc.collect()


@pytest.fixture
def gpt(mock_llm: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=mock_llm.url, api_key="x", max_retries=0)


@pytest.fixture
def agpt(mock_llm: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=mock_llm.url, api_key="x", max_retries=0)
