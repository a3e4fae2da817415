"""The retry policy: what to do after one delivery attempt. A pure function of its inputs.

| answer | decision |
|---|---|
| delivered | ``done`` |
| a transient failure (network, 408/425/429, 5xx but 501/505) | ``retry`` after full-jitter backoff (``backoff_base`` x 2^attempt, at most ``max_backoff``), or the server's ``Retry-After`` (at most ``max_retry_after``); for as long as the process lives |
| 401, 403 (the key is wrong or not allowed) | ``pause``: the destination stops sending; the usage is kept, probed again after ``pause_probe`` |
| any other refusal (400, 404, 422, ``{"success": false}``, ...) | ``dead``: moved to the dead-letter store |

During the exit flush a retry is brought forward to fit the time left (``budget``): a few quick
503s must not cost a short script its usage; what does not fit stays on disk.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from .sinks import SendResult

__all__ = ["Decision", "RetryPolicy", "decide"]

Action = Literal["done", "retry", "pause", "dead"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    backoff_base: float = 0.25
    max_backoff: float = 10.0
    max_retry_after: float = 60.0
    pause_probe: float = 60.0


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    delay: float = 0.0


def decide(result: SendResult, attempts: int, policy: RetryPolicy, *, budget: float | None = None,
           rand: float | None = None) -> Decision:
    """``attempts``: failed attempts so far, this one included. ``budget``: seconds left of the
    exit flush (``None`` outside it). ``rand`` in [0, 1) replaces the jitter (for tests)."""
    if result.outcome == "ok":
        return Decision("done")
    if result.outcome == "pause":
        return Decision("pause", policy.pause_probe)
    if result.outcome == "fatal":
        return Decision("dead")
    if result.retry_after is not None:  # the server said when: honoured, also at exit
        return Decision("retry", min(result.retry_after, policy.max_retry_after))
    cap = min(policy.max_backoff, policy.backoff_base * (2 ** min(attempts, 30)))
    delay = cap * (random.random() if rand is None else rand)
    if budget is not None:
        # Pace the exit flush: several more attempts must fit in what is left of the budget.
        delay = min(delay, max(0.02, budget / 6))
    return Decision("retry", delay)
