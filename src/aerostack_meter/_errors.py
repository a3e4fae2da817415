"""The exceptions aerostack-meter raises into user code.

Only configuration mistakes and a user's own direct calls raise; nothing that happens inside the
wrappers or the reporter ever does (it is logged and counted instead)::

    AerostackMeterError
    ├── ConfigError (also ValueError)         bad init()/wrap()/consumer() settings
    ├── MissingConsumerError                  on_missing_consumer="raise" and no consumer is set
    └── BudgetExceededError                   the call's worst case does not fit the consumer's budget
        └── BudgetUnavailableError            the budget source failed and on_budget_error="closed"
"""

from __future__ import annotations

__all__ = ["AerostackMeterError", "BudgetExceededError", "BudgetUnavailableError", "ConfigError",
           "MissingConsumerError"]


class AerostackMeterError(Exception):
    """Base class of every exception raised by aerostack-meter."""


class ConfigError(AerostackMeterError, ValueError):
    """A setting has a bad value; the message names the setting and the problem."""

    def __init__(self, setting: str, problem: str) -> None:
        self.setting = setting
        self.problem = problem
        super().__init__(f"aerostack_meter: setting {setting!r}: {problem}")


class MissingConsumerError(AerostackMeterError):
    """An LLM call was about to be made with no consumer to bill, and the policy is ``"raise"``.

    Raised before the request is sent, so no unbillable spend happens.
    """


class BudgetExceededError(AerostackMeterError):
    """A metered call was refused before it was sent: its worst case does not fit the budget.

    Nothing was sent to the provider. Attributes: ``consumer`` (the consumer id), ``needed`` (the
    call's worst case), ``remaining`` (what the consumer had left, ``None`` when unknown), both in
    ``unit`` (``"tokens"`` or the cost policy's metric, e.g. ``"cost_micro_usd"``).
    """

    def __init__(self, consumer: str, needed: int, remaining: int | None, unit: str = "tokens",
                 message: str | None = None) -> None:
        self.consumer = consumer
        self.needed = needed
        self.remaining = remaining
        self.unit = unit
        super().__init__(message or (
            f"aerostack_meter: budget exceeded for consumer {consumer!r}: this call may need up to "
            f"{needed} {unit}, {remaining} left; not sent"))


class BudgetUnavailableError(BudgetExceededError):
    """The budget source failed (raised, timed out) and ``on_budget_error="closed"``: refused.

    ``remaining`` is ``None``; the source's exception is the ``__cause__``.
    """
