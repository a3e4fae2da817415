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
