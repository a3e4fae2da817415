"""Fixtures for the dashboard suite: a ledger with known data and a dashboard over it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aerostack_meter.servers.dashboard import DashboardHandle, start_dashboard

from ._data import make_ledger


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    return make_ledger(tmp_path / "usage.db", time.time())


@pytest.fixture
def dashboard(ledger: Path) -> Iterator[DashboardHandle]:
    with start_dashboard(ledger=ledger, refresh_seconds=0) as dash:
        yield dash
