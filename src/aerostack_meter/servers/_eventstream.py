"""The AWS event-stream binary framing (``application/vnd.amazon.eventstream``), encoder only.

One message: a 12-byte prelude (total length, headers length, CRC32 of those 8 bytes), the
headers (name length u8, name, type 7 = string, value length u16, value), the payload, and a
CRC32 of everything before it. Bedrock streams carry JSON payloads with the headers
``:message-type`` (``event`` or ``exception``), ``:event-type`` / ``:exception-type`` and
``:content-type``. The decoder is botocore's (``botocore.eventstream.EventStreamBuffer``), which
the tests use to check these bytes.
"""

from __future__ import annotations

import base64
import json
import struct
import zlib
from collections.abc import Mapping
from typing import Any

__all__ = ["chunk", "encode", "event", "exception"]

_STRING = 7


def _header(name: str, value: str) -> bytes:
    n, v = name.encode(), value.encode()
    return struct.pack(">B", len(n)) + n + struct.pack(">BH", _STRING, len(v)) + v


def encode(headers: Mapping[str, str], payload: bytes) -> bytes:
    """One event-stream message with string headers and valid prelude and message CRCs."""
    head = b"".join(_header(k, v) for k, v in headers.items())
    prelude = struct.pack(">II", 12 + len(head) + len(payload) + 4, len(head))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + head + payload
    return message + struct.pack(">I", zlib.crc32(message))


def _json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def event(event_type: str, payload: Any) -> bytes:
    """An ``event`` message whose payload is the event member's JSON."""
    headers = {
        ":event-type": event_type,
        ":content-type": "application/json",
        ":message-type": "event",
    }
    return encode(headers, _json(payload))


def chunk(data: Any) -> bytes:
    """An ``invoke_model_with_response_stream`` ``chunk`` event: the model's JSON event, base64."""
    return event("chunk", {"bytes": base64.b64encode(_json(data)).decode()})


def exception(exception_type: str, message: str) -> bytes:
    """An in-stream ``exception`` message (e.g. ``modelStreamErrorException``)."""
    headers = {
        ":exception-type": exception_type,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return encode(headers, _json({"message": message}))
