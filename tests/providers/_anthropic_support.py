"""Helpers for the Anthropic provider tests: clients on the mock LLM server, sync/async twins,
expected units, and a comparison with an un-metered run."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anthropic
import httpx
import pytest

import aerostack_meter as am

from ._support import MODES, USER, close, drain, resolve  # noqa: F401 (re-exported for the tests)

SDK_MAJOR = int(anthropic.__version__.split(".", 1)[0])
try:  # 1.x and later talk through httpx2; 0.x through httpx
    import anthropic._base_client as _bc

    HX: Any = getattr(_bc, "httpx2", None) or _bc.httpx
except Exception:  # pragma: no cover
    HX = httpx

ARGS: dict[str, Any] = {"model": "claude-mock", "max_tokens": 64, "messages": USER}


_open: list[Any] = []  # clients a test made, closed at its end on its own event loop


@pytest.fixture(autouse=True)
async def collect_garbage() -> AsyncIterator[None]:
    """Close each test's clients, then collect its dropped streams at its end, not at some random
    later point: CPython 3.11 can fail to compile (SystemError) when a finalizer that the cyclic
    GC runs in the middle of the compiler raises a warning-as-error."""
    yield
    while _open:
        c = _open.pop()
        await resolve((getattr(c, "aclose", None) or c.close)())
    gc.collect(1)  # the young generations hold what the test dropped; a full pass is slow


def client(llm: Any, mode: str, **kwargs: Any) -> Any:
    """A client on the mock LLM server (closed by the ``collect_garbage`` fixture)."""
    cls = anthropic.AsyncAnthropic if mode == "async" else anthropic.Anthropic
    c = cls(api_key="sk-test", base_url=llm.anthropic_base_url, max_retries=0, **kwargs)
    _open.append(c)
    return c


@contextlib.asynccontextmanager
async def enter(cm: Any, mode: str) -> AsyncIterator[Any]:
    """``with cm`` or ``async with cm`` depending on the client's mode."""
    if mode == "async":
        async with cm as value:
            yield value
    else:
        with cm as value:
            yield value


def units(usage: Any) -> int:
    """The default metric for one Anthropic usage object: all input (cache included) + output."""
    return (usage.input_tokens + (usage.cache_creation_input_tokens or 0)
            + (usage.cache_read_input_tokens or 0) + usage.output_tokens)


def stream_units(events: list[Any]) -> int:
    """The default metric for a complete raw event stream: message_start's input and cache
    counts, overwritten by the last message_delta's cumulative ones (never added up)."""
    start = events[0].message.usage
    last = [e for e in events if e.type == "message_delta"][-1].usage
    fields = {}
    for name in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
        value = getattr(last, name, None)
        fields[name] = value if value is not None else (getattr(start, name, None) or 0)
    return sum(fields.values()) + last.output_tokens


def input_units(usage: Any) -> int:
    return usage.input_tokens + (usage.cache_creation_input_tokens or 0) + (usage.cache_read_input_tokens or 0)


def estimate_output(chars: int) -> int:
    return -(-chars // 4) if chars else 0


def text_chars(events: list[Any]) -> int:
    n = 0
    for e in events:
        if getattr(e, "type", None) == "content_block_delta" and e.delta.type == "text_delta":
            n += len(e.delta.text)
    return n


def norm(value: Any) -> Any:
    """A comparable form of what the user received: model dumps without per-request ids."""
    if hasattr(value, "model_dump"):
        value = value.model_dump()
    if isinstance(value, dict):
        return {k: norm(v) for k, v in value.items() if k != "id"}
    if isinstance(value, (list, tuple)):
        return [norm(v) for v in value]
    return value


@contextlib.contextmanager
def unmetered() -> Iterator[None]:
    """Run SDK calls with the patches removed (for the baseline a metered run must match)."""
    am.uninstrument()
    try:
        yield
    finally:
        am.instrument(("anthropic",))


def stats() -> Any:
    assert am.flush(10)
    return am.stats()


# -- Bedrock / Vertex: their paths forwarded to the mock's /v1/messages -------------------------

def forwarding_http_client(llm: Any, mode: str) -> tuple[Any, list[str]]:
    """An SDK http client whose transport forwards Bedrock/Vertex requests to the mock server.

    The mock has no Vertex ``:rawPredict`` or Bedrock ``/invoke`` route, so the path is rewritten
    to ``/v1/messages``; the body (Vertex/Bedrock shape: no ``model``, ``anthropic_version``
    added) is sent as is, and the mock's answer (JSON or SSE) returned unchanged.
    """
    forward = httpx.Client(base_url=llm.anthropic_base_url, timeout=10)
    _open.append(forward)
    seen: list[str] = []

    def handler(request: Any) -> Any:
        path = request.url.path
        seen.append(path)
        target = "/v1/messages/count_tokens" if "count-tokens" in path else "/v1/messages"
        headers = {k: v for k, v in request.headers.items() if k.lower().startswith("x-mock-")}
        headers["content-type"] = "application/json"
        r = forward.post(target, content=request.content, headers=headers)
        return HX.Response(r.status_code, headers={"content-type": r.headers["content-type"]},
                           content=r.content)

    transport = HX.MockTransport(handler)
    http = HX.AsyncClient(transport=transport) if mode == "async" else HX.Client(transport=transport)
    _open.append(http)
    return http, seen
