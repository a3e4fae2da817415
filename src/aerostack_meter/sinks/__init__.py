"""Where the reporter delivers usage: the Aerostack billing API, a local SQLite ledger, a Redis
stream (for ``aerostack-meter relay``), or several."""

from ._aerostack import AerostackSink
from ._base import Batch, SendResult, Sink
from ._fanout import FanOutSink
from ._ledger import LedgerSink
from ._redis import RedisSink

__all__ = ["AerostackSink", "Batch", "FanOutSink", "LedgerSink", "RedisSink", "SendResult", "Sink"]
