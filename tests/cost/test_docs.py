"""The worked examples in docs/cost.md are what metrics="cost" bills (each row, a fresh consumer)."""

from __future__ import annotations

from pathlib import Path

import pytest

import aerostack_meter as am
from aerostack_meter import Usage

DOC = Path(__file__).resolve().parents[2] / "docs" / "cost.md"


def _rows() -> list[list[str]]:
    text = DOC.read_text()
    table = text.split("<!-- cost-examples -->")[1].split("<!-- /cost-examples -->")[0]
    lines = [ln for ln in table.strip().splitlines()[2:] if ln.startswith("|")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]


def test_the_doc_has_its_examples() -> None:
    assert len(_rows()) >= 8


@pytest.mark.parametrize("row", _rows(), ids=lambda r: "-".join(r[:2] + r[-2:]))
def test_worked_example(row: list[str]) -> None:
    provider, model, inp, cached, write, write_1h, out, tier, billed = row
    usage = Usage(provider, model, int(inp), int(out), int(inp) + int(out),
                  cached_input_tokens=int(cached), cache_write_tokens=int(write),
                  cache_write_1h_tokens=int(write_1h), service_tier=tier or None)
    policy = am.cost_policy()
    assert policy.bill(usage, "fresh", "api", 0.0) == {"cost_micro_usd": int(billed)}
