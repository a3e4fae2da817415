"""Mistral (``mistralai``): which methods are metered and where their usage lives.

Metered: ``complete`` and ``stream`` and their ``_async`` twins on ``Chat`` (``client.chat``),
``Fim`` (``client.fim``, fill-in-the-middle) and ``Agents`` (``client.agents``); chat's
``parse``/``parse_stream`` (structured outputs) send through them. Both import paths the SDK has
used are covered: ``from mistralai import Mistral`` (1.x, modules ``mistralai.chat`` ...) and
``from mistralai.client import Mistral`` (2.x and later, ``mistralai.client.chat`` ...). All three
answer in the same shapes: ``usage`` of the response, and of the stream's last event
(:mod:`._mistral_usage`); a stream left early is estimated once. A method bound before ``init()``
(the SDK's own function) is metered at ``BaseSDK.do_request`` instead (:mod:`._mistral_http`). Not
metered:
``beta.conversations``, embeddings, OCR (docs/providers/mistral.md).
"""

from __future__ import annotations

import importlib.util
from typing import Any

from .._wrap import HELPER
from ._base import Provider, ReaderEndpoint, Target, method_target
from ._mistral_usage import chunk_chars, chunk_usage, response_usage

__all__ = ["PROVIDER"]

def _endpoints(resource: str) -> tuple[ReaderEndpoint, ReaderEndpoint]:
    return (ReaderEndpoint("mistral", f"{resource}.complete", response=response_usage),
            ReaderEndpoint("mistral", f"{resource}.stream", event=chunk_usage, event_chars=chunk_chars))


COMPLETE, STREAM = _endpoints("chat")
FIM_COMPLETE, FIM_STREAM = _endpoints("fim")
AGENTS_COMPLETE, AGENTS_STREAM = _endpoints("agents")

# resource module, class, endpoints (the module is ``mistralai.client.<m>`` in 2.x and later,
# ``mistralai.<m>`` in 1.x)
_RESOURCES = (("chat", "Chat", COMPLETE, STREAM), ("fim", "Fim", FIM_COMPLETE, FIM_STREAM),
              ("agents", "Agents", AGENTS_COMPLETE, AGENTS_STREAM))


def _targets() -> list[Target]:
    from ._mistral_http import request_hook

    out = []
    for prefix in ("mistralai.client.", "mistralai."):
        # a call that escaped its method's meter (a method bound before init()): _mistral_http
        out += [Target(prefix + "basesdk", "BaseSDK.do_request", None, False, plain=request_hook(False)),
                Target(prefix + "basesdk", "BaseSDK.do_request_async", None, True, plain=request_hook(True))]
        for module, cls, complete, stream in _RESOURCES:
            out += [
                method_target(prefix + module, f"{cls}.complete", complete, False, "response"),
                method_target(prefix + module, f"{cls}.complete_async", complete, True, "response"),
                method_target(prefix + module, f"{cls}.stream", stream, False, "stream"),
                method_target(prefix + module, f"{cls}.stream_async", stream, True, "stream"),
            ]
    return out


def _leaves(complete: ReaderEndpoint, stream: ReaderEndpoint) -> dict[str, Any]:
    return {"complete": complete, "complete_async": complete, "stream": stream, "stream_async": stream}


_CHAT: dict[str, Any] = {
    **_leaves(COMPLETE, STREAM),
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
    client_tree={"chat": _CHAT, "fim": _leaves(FIM_COMPLETE, FIM_STREAM),
                 "agents": _leaves(AGENTS_COMPLETE, AGENTS_STREAM)},
)
