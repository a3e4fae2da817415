"""Helpers for your own tests: capture the usage events your code would bill, without a network.

    from aerostack_meter.testing import capture_usage

    def test_chat_is_billed_to_the_user():
        with capture_usage() as usage:
            with aerostack_meter.consumer("usr_1"):
                my_chatbot.answer("hi")
        assert usage.totals() == {"usr_1": 42}
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from . import _global
from ._events import UsageEvent
from ._instrument import instrument
from ._meter import Meter
from .sinks import Batch, SendResult

__all__ = ["CapturedUsage", "MemorySink", "capture_usage"]


class MemorySink:
    """A sink that keeps every delivered batch in memory."""

    def __init__(self) -> None:
        self.batches: list[Batch] = []
        self._lock = threading.Lock()

    def send(self, batch: Batch) -> SendResult:
        with self._lock:
            self.batches.append(batch)
        return SendResult("ok")

    def close(self) -> None:
        pass

    def after_fork(self) -> None:
        self._lock = threading.Lock()


class CapturedUsage:
    def __init__(self, meter: Meter, sink: MemorySink, events: list[UsageEvent]) -> None:
        self.meter = meter
        self.sink = sink
        self._events = events

    @property
    def events(self) -> list[UsageEvent]:
        """Every event recorded so far (flushes first)."""
        self.meter.flush(10)
        return list(self._events)

    def totals(self, metric: str | None = None) -> dict[str, int]:
        """Units per consumer, over all metrics or one."""
        out: dict[str, int] = {}
        for ev in self.events:
            if metric is None or ev.metric == metric:
                out[ev.consumer_id] = out.get(ev.consumer_id, 0) + ev.units
        return out


@contextmanager
def capture_usage(**options: Any) -> Iterator[CapturedUsage]:
    """Make the process-wide meter record into memory for the duration of the block.

    Options are those of ``init()``, read from the environment as ``init()`` reads them; where
    neither gives an API ID, ``"api_test"``. The SDKs are instrumented. The previous meter is
    restored on exit.
    """
    events: list[UsageEvent] = []
    user_hook = options.pop("before_send", None)

    def keep(ev: UsageEvent) -> UsageEvent | None:
        out = user_hook(ev) if user_hook is not None else ev
        if out is not None:
            events.append(out)
        return out

    sink = MemorySink()
    options.setdefault("flush_interval", 0.01)
    if options.get("api_id") is None and not os.environ.get("AEROSTACK_API_ID"):
        options["api_id"] = "api_test"
    meter = Meter(sink=sink, before_send=keep, **options)
    with _global._lock:
        previous, previous_args = _global._meter, _global._init_args
        _global._set(meter, None)
    instrument(meter.settings.instrument)
    try:
        yield CapturedUsage(meter, sink, events)
    finally:
        meter.shutdown(5)
        with _global._lock:
            _global._set(previous, previous_args)
