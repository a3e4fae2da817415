"""What a mock endpoint answers, as data: a JSON body or a list of stream frames (SSE or AWS
event-stream messages).

Providers build plans (pure functions of the request); the app writes them, applying delays,
aborts and error events, and adds the usage to the tally when its frame is sent.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ._mock_usage import Controls, Usage

__all__ = [
    "EVENT_STREAM",
    "SSE",
    "Frame",
    "JsonPlan",
    "RequestInfo",
    "StreamPlan",
    "split_chunks",
    "sse",
]


@dataclass(frozen=True)
class Frame:
    data: bytes
    delta: bool = False  # a content chunk (counted by x-mock-chunks / x-mock-stream-error-after)
    tally: bool = False  # sending this frame delivers the usage


SSE = b"text/event-stream; charset=utf-8"
EVENT_STREAM = b"application/vnd.amazon.eventstream"


@dataclass
class JsonPlan:
    body: Any
    usage: Usage | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)  # extra response headers


@dataclass
class StreamPlan:
    frames: list[Frame]
    error_frame: bytes  # the provider's in-stream error event (x-mock-stream-error-event)
    usage: Usage | None = None
    content_type: bytes = SSE


@dataclass
class RequestInfo:
    """Per-request context handed to a provider: controls, a stable id and the time."""

    controls: Controls
    seq: int
    created: int = field(default_factory=lambda: int(time.time()))
    params: Mapping[str, str] = field(default_factory=dict)  # path parameters (model id, ...)


_ids = itertools.count(1)


def next_seq() -> int:
    return next(_ids)


def sse(data: Any, event: str | None = None) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


def split_chunks(words: list[str], chunks: int | None) -> list[str]:
    """Split the reply into `chunks` pieces (default one word each) whose concatenation is the
    reply text (pieces after the first carry the separating space)."""
    if not words:
        return [""]
    n = max(1, min(chunks or len(words), len(words)))
    size, extra = divmod(len(words), n)
    pieces: list[str] = []
    start = 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        text = " ".join(words[start:end])
        pieces.append(text if i == 0 else " " + text)
        start = end
    return pieces
