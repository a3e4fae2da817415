"""Validation of a `POST /gateway/billing/log` body, field by field, as the emulator does it."""

from __future__ import annotations

import json
from dataclasses import dataclass

__all__ = ["BillingEvent", "ValidationFailure", "parse_billing_body"]

MAX_UNITS = 2**63 - 1  # SQLite INTEGER range
_ALLOWED = ("consumerId", "apiId", "units", "metric")


@dataclass(frozen=True)
class BillingEvent:
    consumer_id: str
    api_id: str
    units: int
    metric: str


class ValidationFailure(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def parse_billing_body(raw: bytes) -> BillingEvent:
    """Parse and validate the JSON body, raising `ValidationFailure` at the first bad field."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ValidationFailure("body", "request body must be valid JSON") from None
    if not isinstance(data, dict):
        raise ValidationFailure("body", "request body must be a JSON object")
    for key in data:
        if key not in _ALLOWED:
            raise ValidationFailure(key, f"unknown field '{key}'")
    consumer_id = _required_str(data, "consumerId")
    api_id = _required_str(data, "apiId")
    if "units" not in data:
        raise ValidationFailure("units", "units is required")
    units = data["units"]
    if isinstance(units, bool) or not isinstance(units, int):
        raise ValidationFailure("units", "units must be an integer")
    if units < 0:
        raise ValidationFailure("units", "units must be >= 0")
    if units > MAX_UNITS:
        raise ValidationFailure("units", f"units must be <= {MAX_UNITS}")
    metric = "units"
    if "metric" in data:
        metric = data["metric"]
        if not isinstance(metric, str) or not metric:
            raise ValidationFailure("metric", "metric must be a non-empty string")
    return BillingEvent(consumer_id=consumer_id, api_id=api_id, units=units, metric=metric)


def _required_str(data: dict[str, object], name: str) -> str:
    if name not in data:
        raise ValidationFailure(name, f"{name} is required")
    value = data[name]
    if not isinstance(value, str):
        raise ValidationFailure(name, f"{name} must be a string")
    if not value.strip():
        raise ValidationFailure(name, f"{name} must not be empty")
    return value
