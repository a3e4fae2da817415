"""Send dead-lettered records again: ``aerostack-meter relay --retry-dead``.

A record the billing API refused for good (402 insufficient funds, 400) is copied whole to
``{stream}:dead`` with its main-stream ``entry`` and the ``reason``. Once the cause is fixed (the
wallet topped up, the API ID created), this moves each such record back to the main stream, where
the relays deliver it as any other. Each move is one transaction (``XADD`` to the stream, ``XDEL``
from the dead-letter stream): a record is never in both, never in neither. It goes back under a new
record id, derived from its dead-letter entry (``<record id>.retry-<dead entry id>``): the old one
is remembered as dead-lettered, and a relay would skip a record carrying it; a move repeated after a
crash reuses the derived id, which the relays deliver once. An entry that is not a record (a
malformed entry, dead-lettered as ``invalid_entry``) is left where it is and counted.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .._stream import StreamConfig

__all__ = ["RetriedDead", "retry_dead"]

_RECORD = ("r", "c", "a", "m", "u")  # what a record needs (see aerostack_meter._stream)
_PAGE = 500


class RetriedDead(NamedTuple):
    moved: int  # records moved back to the stream
    units: int  # their units
    left: int  # entries left in the dead-letter stream (not records)


def retry_dead(client: Any, stream: StreamConfig) -> RetriedDead:
    """Move every dead-lettered record back to ``stream`` (``client``: redis-py, decoding
    responses). Raises redis-py's errors (Redis unreachable)."""
    moved = units = left = 0
    start = "-"
    while True:
        page = client.xrange(stream.dead_stream, start, "+", count=_PAGE)
        for dead_id, fields in page:
            record = {k: v for k, v in fields.items() if k not in ("entry", "reason")}
            if not all(record.get(k) for k in _RECORD) or not record["u"].isdigit():
                left += 1
                continue
            record["r"] = f"{record['r']}.retry-{dead_id}"
            pipe = client.pipeline(transaction=True)
            pipe.xadd(stream.stream, record)  # (no MAXLEN: the relays trim only what is delivered)
            pipe.xdel(stream.dead_stream, dead_id)
            pipe.execute()
            moved += 1
            units += int(record["u"])
        if len(page) < _PAGE:
            return RetriedDead(moved, units, left)
        start = "(" + page[-1][0]
