"""Fixtures shared by the provider tests."""

from __future__ import annotations

from typing import Any

import pytest

from ._openai_support import Capture


@pytest.fixture
def capture(meter_factory: Any) -> Capture:
    """Every usage event the meter produces, with a default consumer and a quick flush."""
    cap = Capture()
    meter_factory(default_consumer_id="default", before_send=cap, flush_interval=0.01)
    return cap
