"""Where the reporter delivers usage: the Aerostack billing API, a local SQLite ledger, or several."""

from ._aerostack import AerostackSink
from ._base import Batch, SendResult, Sink
from ._fanout import FanOutSink
from ._ledger import LedgerSink

__all__ = ["AerostackSink", "Batch", "FanOutSink", "LedgerSink", "SendResult", "Sink"]
