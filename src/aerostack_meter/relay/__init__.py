"""Delivery from a Redis stream to the billing API, for applications that run on many machines.

Applications append usage to the stream (``init(sink="redis://...")`` or
``AEROSTACK_METER_REDIS_URL``); one or more ``aerostack-meter relay`` processes read it in a
consumer group, coalesce, deliver and acknowledge. See docs/scaling.md.
"""

from .._stream import StreamConfig
from ._health import RelayHealth
from ._relay import Relay, RelayOptions, retry_delay
from ._retry_dead import RetriedDead, retry_dead
from ._stats import format_stats, gather

__all__ = ["Relay", "RelayHealth", "RelayOptions", "RetriedDead", "StreamConfig", "format_stats", "gather",
           "retry_dead", "retry_delay"]
