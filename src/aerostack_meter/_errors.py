"""The exceptions aerostack-meter raises into user code.

One rule: a bad argument to any public function -- ``init()``, ``Meter()``, ``consumer()``,
``wrap()``, ``log()`` -- raises :class:`ConfigError` at once, whether the value has the wrong type
or a wrong value, and the message names the function and the argument. ``ConfigError`` is also a
``ValueError``, so code that catches ``ValueError`` keeps working. The other exceptions are raised
by a metered LLM call before its request is sent, when a policy asks for it:
:class:`MissingConsumerError` and :class:`BudgetExceededError`. Nothing that happens inside the
wrappers or the reporter ever raises (it is logged and counted instead), and Python's own
``TypeError`` for a wrong number of arguments is left as it is::

    Exception
    └── AerostackMeterError                   every exception of ours
        ├── ConfigError (also ValueError)     a bad setting or argument; .setting names it
        ├── MissingConsumerError              on_missing_consumer="raise" and nobody to bill
        └── BudgetExceededError               the call's worst case does not fit the budget
            └── BudgetUnavailableError        the budget source failed, on_budget_error="closed"
"""

from __future__ import annotations

__all__ = ["AerostackMeterError", "BudgetExceededError", "BudgetUnavailableError", "ConfigError",
           "MissingConsumerError"]


class AerostackMeterError(Exception):
    """Base class of every exception raised by aerostack-meter."""


class ConfigError(AerostackMeterError, ValueError):
    """A setting or an argument has a bad type or value.

    ``setting`` names it (``"flush_interval"``, ``"consumer_id"``), ``problem`` says what is wrong,
    and ``call`` names the function that refused it (``None`` for ``init()`` / ``Meter()``
    settings). The message reads ``aerostack_meter: setting 'flush_interval': must be positive``
    or ``aerostack_meter.log(): argument 'units': must be an int, got str``.
    """

    def __init__(self, setting: str, problem: str, *, call: str | None = None) -> None:
        self.setting = setting
        self.problem = problem
        self.call = call
        if call is None:
            message = f"aerostack_meter: setting {setting!r}: {problem}"
        else:
            message = f"aerostack_meter.{call}(): argument {setting!r}: {problem}"
        super().__init__(message)


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

    ``remaining`` is ``None``; the source's exception is the ``__cause__``. ``needed`` is the
    call's worst case, or ``0`` when it is unknown (a money budget and a model with no price).
    """
