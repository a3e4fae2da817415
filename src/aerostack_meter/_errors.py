"""The exceptions aerostack-meter raises into user code.

Only configuration mistakes and a user's own direct calls raise; nothing that happens inside the
wrappers or the reporter ever does (it is logged and counted instead)::

    AerostackMeterError
    ├── ConfigError (also ValueError)         bad init()/wrap()/consumer() settings
    └── MissingConsumerError                  on_missing_consumer="raise" and no consumer is set
"""

from __future__ import annotations

__all__ = ["AerostackMeterError", "ConfigError", "MissingConsumerError"]


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
