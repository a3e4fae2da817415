"""Where the reporter delivers usage: the Aerostack billing API, a local SQLite ledger, a Redis
stream (for ``aerostack-meter relay``), or several.

The sink classes are imported on first use (PEP 562), so a configuration pays only for the sink it
builds: ``import aerostack_meter`` does not import httpx, and a ledger-only meter never does."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_names as _lazy_names
from ._base import Batch, SendResult, Sink

if TYPE_CHECKING:
    from ._aerostack import AerostackSink
    from ._fanout import FanOutSink
    from ._ledger import LedgerSink
    from ._redis import RedisSink

_LAZY = {"AerostackSink": "._aerostack", "FanOutSink": "._fanout", "LedgerSink": "._ledger",
         "RedisSink": "._redis"}

__all__ = ["AerostackSink", "Batch", "FanOutSink", "LedgerSink", "RedisSink", "SendResult", "Sink"]


__getattr__, __dir__ = _lazy_names(globals(), _LAZY)
