"""The sink interface: where the reporter delivers a batch, and what it says about the attempt."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

__all__ = ["Batch", "SendResult", "Sink"]


@dataclass(slots=True)
class Batch:
    """One request's worth of usage: the exact sum of ``n_events`` events under one key."""

    consumer_id: str
    api_id: str
    metric: str
    units: int
    n_events: int
    idempotency_key: str
    seq: int = 0
    attempts: int = 0
    ambiguous_attempts: int = 0
    first_attempt: float = 0.0
    estimated: bool = False
    estimated_units: int = 0  # the part of ``units`` that came from estimates
    price_table: str | None = None  # the price table that priced these units (metrics="cost")
    #: (the durable store's) the last delivery mark journaled for this request: ``""`` (formed
    #: only), ``"T"`` (a retry sent), ``"F"`` (failed, waiting to be retried), ``"D"`` (settled)
    journal_mark: str = field(default="", repr=False, compare=False)

    def wire(self) -> dict[str, object]:
        return {
            "consumerId": self.consumer_id,
            "apiId": self.api_id,
            "metric": self.metric,
            "units": self.units,
        }


@dataclass(frozen=True, slots=True)
class SendResult:
    """What happened to one attempt.

    ``ok``: delivered. ``retry``: a transient failure, try again later (after ``retry_after``
    seconds if the server said so); ``ambiguous`` when the request may have been processed.
    ``pause``: the destination refuses our credentials (401/403): stop sending to it, keep the
    usage. ``fatal``: this request will never be accepted; it goes to the dead-letter store.
    ``reason`` names why (``rejected_<status>`` and the like).
    """

    outcome: Literal["ok", "retry", "pause", "fatal"]
    reason: str = ""
    retry_after: float | None = None
    ambiguous: bool = False
    message: str = ""


OK = SendResult("ok")


@runtime_checkable
class Sink(Protocol):
    """Delivers batches. Called from the reporter's sender threads, possibly concurrently.

    A sink may also have a ``destination`` attribute (a string naming where it delivers, without
    secrets): only then is its usage journaled to disk and adopted across processes; a sink
    without one is fed from memory. A sink that sends with a credential also names it with a
    ``key_fingerprint`` attribute (16 lowercase hex digits, one-way: ``Secret.fingerprint()``):
    usage journaled under one fingerprint is only ever delivered by a sink with the same one.
    """

    def send(self, batch: Batch) -> SendResult: ...

    def close(self) -> None: ...

    def after_fork(self) -> None:
        """Forget inherited connections in a forked child, without I/O on them."""
        ...
