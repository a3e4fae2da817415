"""The reservations in docs/budgets.md's worked examples are what a budget reserves."""

from __future__ import annotations

from pathlib import Path

import pytest

import aerostack_meter as am

DOC = Path(__file__).resolve().parents[2] / "docs" / "budgets.md"


def _rows() -> list[list[str]]:
    table = DOC.read_text().split("<!-- budget-examples -->")[1].split("<!-- /budget-examples -->")[0]
    lines = [ln for ln in table.strip().splitlines()[2:] if ln.startswith("|")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]


def test_the_doc_has_its_examples() -> None:
    assert len(_rows()) >= 5


@pytest.mark.parametrize("row", _rows(), ids=lambda r: "-".join(r[:3] + r[-1:]))
def test_worked_example(row: list[str]) -> None:
    unit, provider, model, chars, max_tokens, reserved = row
    budget = am.Budget(unit=unit)
    request = {"model": model, "max_tokens": int(max_tokens),
               "messages": [{"role": "user", "content": "x" * int(chars)}]}
    assert budget.worst_case(provider, request) == int(reserved)


@pytest.mark.parametrize(("provider", "request_", "needed"), [
    ("gemini", {"model": "gemini-2.5-flash", "contents": "x" * 400,
                "config": {"max_output_tokens": 50}}, 150),
    ("bedrock", {"modelId": "anthropic.claude-3-5-sonnet-20240620-v1:0",
                 "messages": [{"role": "user", "content": [{"text": "x" * 400}]}],
                 "inferenceConfig": {"maxTokens": 70}}, 170),
    ("mistral", {"model": "mistral-large-latest", "max_tokens": 30,
                 "messages": [{"role": "user", "content": "x" * 40}]}, 40),
])
def test_worst_case_reads_each_api_shape(provider: str, request_: dict[str, object], needed: int) -> None:
    """Nested output caps (a config object or dict) and other names for the model are found."""
    assert am.Budget().worst_case(provider, request_) == needed
