"""Mistral (``mistralai``): which methods are metered and where their usage lives.

Metered (on ``Chat``, the class behind ``client.chat``): ``complete`` and ``stream`` and their
``_async`` twins; ``parse``/``parse_stream`` (structured outputs) send through them. Both import
paths the SDK has used are covered: ``from mistralai import Mistral`` (1.x, module
``mistralai.chat``) and ``from mistralai.client import Mistral`` (2.x and later, module
``mistralai.client.chat``). Usage: ``usage`` of the response, and of the stream's last event
(:mod:`._mistral_usage`); a stream left early is estimated once. Not metered: ``fim``, ``agents``,
``beta.conversations``, embeddings, OCR (docs/providers/mistral.md).
"""

from __future__ import annotations

import importlib.util
from typing import Any

from .._wrap import HELPER
from ._base import Provider, ReaderEndpoint, Target
from ._mistral_usage import chunk_chars, chunk_usage, response_usage

__all__ = ["PROVIDER"]

COMPLETE = ReaderEndpoint("mistral", "chat.complete", response=response_usage)
STREAM = ReaderEndpoint("mistral", "chat.stream", event=chunk_usage, event_chars=chunk_chars)

_MODULES = ("mistralai.client.chat", "mistralai.chat")  # 2.x and later; 1.x


def _targets() -> list[Target]:
    out = []
    for module in _MODULES:
        out += [
            Target(module, "Chat.complete", COMPLETE, False, "response"),
            Target(module, "Chat.complete_async", COMPLETE, True, "response"),
            Target(module, "Chat.stream", STREAM, False, "stream"),
            Target(module, "Chat.stream_async", STREAM, True, "stream"),
        ]
    return out


_CHAT: dict[str, Any] = {
    "complete": COMPLETE,
    "complete_async": COMPLETE,
    "stream": STREAM,
    "stream_async": STREAM,
    "parse": HELPER,  # they call complete / stream through ``self``
    "parse_async": HELPER,
    "parse_stream": HELPER,
    "parse_stream_async": HELPER,
}

def _package() -> str:
    """The import name to wait for. 1.x: the regular package ``mistralai``. 2.x and later:
    ``mistralai`` is a namespace package (import hooks never fire for one) and the SDK is
    ``mistralai.client``. Finding the spec imports nothing."""
    try:
        spec = importlib.util.find_spec("mistralai")
    except (ImportError, ValueError):
        return "mistralai"
    return "mistralai.client" if spec is not None and spec.origin is None else "mistralai"


PROVIDER = Provider(
    name="mistral",
    package=_package(),
    distribution="mistralai",
    versions=">=1.5,<4,!=2.4.6",
    targets=_targets,
    client_tree={"chat": _CHAT},
)
