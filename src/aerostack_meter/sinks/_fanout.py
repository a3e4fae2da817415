"""Deliver every batch to several sinks; a retry resends only to the sinks that have not taken it."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence

from .._errors import ConfigError
from ._base import OK, Batch, SendResult, Sink

__all__ = ["FanOutSink"]


class FanOutSink:
    def __init__(self, sinks: Sequence[Sink]) -> None:
        if not sinks:
            raise ConfigError("sinks", "needs at least one sink", call="FanOutSink")
        self.sinks = tuple(sinks)
        names = [getattr(s, "destination", None) for s in self.sinks]
        # durable only when every part names its destination
        self.destination = ("fanout:" + "|".join(names)  # type: ignore[arg-type]
                            if all(isinstance(n, str) for n in names) else None)
        keys = [getattr(s, "key_fingerprint", None) for s in self.sinks]
        # usage journaled for the fan-out is delivered only with the same keys in every part
        self.key_fingerprint = (hashlib.sha256("|".join(k if isinstance(k, str) else "" for k in keys)
                                               .encode()).hexdigest()[:16]
                                if any(isinstance(k, str) for k in keys) else None)
        self._done: dict[str, set[int]] = {}
        self._lock = threading.Lock()

    def send(self, batch: Batch) -> SendResult:
        with self._lock:
            done = set(self._done.get(batch.idempotency_key, ()))
        worst: SendResult = OK
        for i, sink in enumerate(self.sinks):
            if i in done:
                continue
            result = sink.send(batch)
            if result.outcome == "ok":
                done.add(i)
            elif worst.outcome != "fatal":
                worst = result
        with self._lock:
            if worst.outcome == "retry":
                self._done[batch.idempotency_key] = done
            else:
                self._done.pop(batch.idempotency_key, None)
        return worst

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()

    def after_fork(self) -> None:
        self._lock = threading.Lock()
        self._done = {}
        for sink in self.sinks:
            sink.after_fork()
