"""Helpers for the OpenAI provider tests: clients on the mock LLM server, sync/async twins written
once, the surfaces as data, what the user received (normalised), and what was billed."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest

import aerostack_meter as am

from ._support import MODES, USER, close, drain, resolve  # noqa: F401 (re-exported for the tests)

SDK_MAJOR = int(openai.__version__.split(".", 1)[0])
import openai._base_client as _bc  # noqa: E402 - which HTTP library this major uses (notes #8)

HX: Any = getattr(_bc, "httpx2", None) or _bc.httpx  # 3.x: httpx2; older majors: httpx


MODEL = "gpt-mock"


_open: list[Any] = []


def client(llm: Any, mode: str, **kwargs: Any) -> Any:
    """A client on the mock LLM server (closed by the ``clients`` fixture)."""
    cls = openai.AsyncOpenAI if mode == "async" else openai.OpenAI
    kwargs.setdefault("base_url", llm.url)
    c = cls(api_key="sk-test", max_retries=0, **kwargs)
    _open.append(c)
    return c


@pytest.fixture(autouse=True)
async def clients() -> AsyncIterator[None]:
    """Close the clients a test made, on its own event loop (import it into each test module)."""
    yield
    while _open:
        await resolve(_open.pop().close())
    # Abandoned streams are collected now, not during some later compile(): CPython 3.11 before
    # 3.11.9 raises "AST constructor recursion depth mismatch" when a GC pass that runs Python
    # finalizers (ours, the SDK's async generators) happens inside ast.parse (gh-106905).
    await collect_garbage()


@contextlib.asynccontextmanager
async def enter(cm: Any) -> AsyncIterator[Any]:
    """``with cm`` or ``async with cm``, whichever the object supports (a wrapt proxy has both
    methods, so ask the object it wraps)."""
    if hasattr(type(getattr(cm, "__wrapped__", cm)), "__aenter__"):
        async with cm as value:
            yield value
    else:
        with cm as value:
            yield value


@pytest.fixture(scope="module", autouse=True)
def quick_gc() -> Iterator[None]:
    """The SDK's many long-lived objects (3.x imports hundreds of modules) make each full
    ``gc.collect()`` slow: import what metering imports, then freeze what exists (objects the
    tests create stay collectable)."""
    am.instrument()  # imports every installed SDK's patched modules, as init() will
    am.uninstrument()
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()
    gc.collect()  # now, rather than inside some later compile() (see ``clients``)


async def collect_garbage() -> None:
    """``gc.collect()``, letting the event loop run the ``aclose()`` it schedules for abandoned async
    generators (the async stream helpers iterate through one), then collecting again."""
    gc.collect()
    for _ in range(5):
        await asyncio.sleep(0)
    gc.collect()


# -- what the user received, comparable across runs -----------------------------------------------

_IDS = re.compile(r"(mock)\d+")


def dump(obj: Any) -> Any:
    """A JSON-able picture of what the user got: ids and timestamps of the mock made run-independent.
    Both ``model_dump()`` (all fields) and ``to_dict()`` (fields set, as sent) are kept."""
    if isinstance(obj, list):
        return [dump(x) for x in obj]
    if isinstance(obj, openai.BaseModel):
        # warnings=False: the SDK's own generic parsed models warn when dumped (not our business)
        picture = {"type": type(obj).__name__, "all": obj.model_dump(mode="json", warnings=False),
                   "set": obj.to_dict(mode="json", warnings=False)}
    elif hasattr(obj, "model_dump"):  # helper events are pydantic models too, not always openai's
        picture = {"type": type(obj).__name__, "all": obj.model_dump(mode="json", warnings=False)}
    else:
        picture = {"type": type(obj).__name__, "value": obj}
    text = json.dumps(picture, sort_keys=True, default=str)
    text = _IDS.sub(r"\1N", text)
    text = re.sub(r'"(created|created_at)": \d+', r'"\1": 0', text)
    return json.loads(text)


# -- surfaces ------------------------------------------------------------------------------------

Run = Callable[[Any], Awaitable[Any]]


@dataclass(frozen=True)
class Surface:
    name: str
    run: Run  # client -> what the user received (dumped)
    stream: bool = False
    min_major: int = 1
    # A raw stream of chat-shaped chunks: the meter sends it as written (the user reads the bytes,
    # an injected usage chunk could not be hidden), so the server reports no usage: estimated.
    estimated: bool = False

    def __str__(self) -> str:
        return self.name


async def _chat_create(c: Any) -> Any:
    return dump(await resolve(c.chat.completions.create(model=MODEL, messages=USER)))


async def _chat_create_stream(c: Any) -> Any:
    s = await resolve(c.chat.completions.create(model=MODEL, messages=USER, stream=True))
    return dump(await drain(s))


async def _chat_parse(c: Any) -> Any:
    return dump(await resolve(c.chat.completions.parse(model=MODEL, messages=USER)))


async def _chat_stream_helper(c: Any) -> Any:
    async with enter(c.chat.completions.stream(model=MODEL, messages=USER)) as s:
        events = await drain(s)
        final = await resolve(s.get_final_completion())
    return dump([*events, final])


async def _chat_stream_helper_final(c: Any) -> Any:
    async with enter(c.chat.completions.stream(model=MODEL, messages=USER)) as s:
        return dump(await resolve(s.get_final_completion()))


async def _responses_create(c: Any) -> Any:
    return dump(await resolve(c.responses.create(model=MODEL, input="hello harbour town")))


async def _responses_create_stream(c: Any) -> Any:
    s = await resolve(c.responses.create(model=MODEL, input="hello harbour town", stream=True))
    return dump(await drain(s))


async def _responses_parse(c: Any) -> Any:
    return dump(await resolve(c.responses.parse(model=MODEL, input="hello harbour town")))


async def _responses_stream_helper(c: Any) -> Any:
    async with enter(c.responses.stream(model=MODEL, input="hello harbour town")) as s:
        events = await drain(s)
        final = await resolve(s.get_final_response())
    return dump([*events, final])


async def _completions_create(c: Any) -> Any:
    return dump(await resolve(c.completions.create(model=MODEL, prompt="once upon a time")))


async def _completions_create_stream(c: Any) -> Any:
    s = await resolve(c.completions.create(model=MODEL, prompt="once upon a time", stream=True))
    return dump(await drain(s))


async def _embeddings_create(c: Any) -> Any:
    return dump(await resolve(c.embeddings.create(model="emb-mock", input=["one two three", "four"])))


def _raw(path: str, kwargs: dict[str, Any], variant: str) -> Run:
    """``resource.with_raw_response.method(...)`` / ``with_streaming_response``: the SDK's raw
    object, parsed by the user (a stream parsed and drained)."""

    async def run(c: Any) -> Any:
        *res, method = path.split(".")
        target: Any = c
        for part in res:
            target = getattr(target, part)
        fn = getattr(getattr(target, variant), method)
        if variant == "with_raw_response":
            raw = await resolve(fn(**kwargs))
            head = {"status": raw.http_response.status_code, "has_request_id": raw.request_id is not None}
            body = raw.parse()
            items = await drain(body) if kwargs.get("stream") else body
            return {"head": head, "body": dump(items)}
        async with enter(fn(**kwargs)) as raw:
            head = {"status": raw.http_response.status_code}
            body = await resolve(raw.parse())
            items = await drain(body) if kwargs.get("stream") else body
            return {"head": head, "body": dump(items)}

    return run


_CHAT_KW: dict[str, Any] = {"model": MODEL, "messages": USER}
_RESP_KW: dict[str, Any] = {"model": MODEL, "input": "hello harbour town"}
_COMPL_KW: dict[str, Any] = {"model": MODEL, "prompt": "once upon a time"}
_EMB_KW: dict[str, Any] = {"model": "emb-mock", "input": "one two three"}

SURFACES = [
    Surface("chat.create", _chat_create),
    Surface("chat.create-stream", _chat_create_stream, stream=True),
    Surface("chat.parse", _chat_parse),
    Surface("chat.stream-helper", _chat_stream_helper, stream=True),
    Surface("chat.stream-helper-final", _chat_stream_helper_final, stream=True),
    Surface("responses.create", _responses_create),
    Surface("responses.create-stream", _responses_create_stream, stream=True),
    Surface("responses.parse", _responses_parse),
    Surface("responses.stream-helper", _responses_stream_helper, stream=True),
    Surface("completions.create", _completions_create),
    Surface("completions.create-stream", _completions_create_stream, stream=True),
    Surface("embeddings.create", _embeddings_create),
]
for _variant, _short in (("with_raw_response", "raw"), ("with_streaming_response", "streaming")):
    SURFACES += [
        Surface(f"chat.create-{_short}", _raw("chat.completions.create", _CHAT_KW, _variant)),
        Surface(f"chat.create-stream-{_short}",
                _raw("chat.completions.create", {**_CHAT_KW, "stream": True}, _variant), stream=True,
                estimated=True),
        Surface(f"chat.parse-{_short}", _raw("chat.completions.parse", _CHAT_KW, _variant)),
        Surface(f"responses.create-{_short}", _raw("responses.create", _RESP_KW, _variant)),
        Surface(f"responses.create-stream-{_short}",
                _raw("responses.create", {**_RESP_KW, "stream": True}, _variant), stream=True),
        Surface(f"completions.create-{_short}", _raw("completions.create", _COMPL_KW, _variant)),
        Surface(f"completions.create-stream-{_short}",
                _raw("completions.create", {**_COMPL_KW, "stream": True}, _variant), stream=True,
                estimated=True),
        Surface(f"embeddings.create-{_short}", _raw("embeddings.create", _EMB_KW, _variant)),
    ]
# The SDK has no responses.with_streaming_response.parse (notes #4); raw parse it has.
SURFACES.append(Surface("responses.parse-raw", _raw("responses.parse", _RESP_KW, "with_raw_response")))


def available(surface: Surface, c: Any) -> bool:
    """Whether the installed SDK has this surface (1.40 has no responses, no chat parse/stream)."""
    res, method = surface.name.split("-", 1)[0].split(".")
    target = c.chat.completions if res == "chat" else getattr(c, res, None)
    return target is not None and hasattr(target, method)


# -- what the servers saw ------------------------------------------------------------------------

def served_tokens(llm: Any) -> int:
    """Total tokens the mock LLM has returned with usage (its own tally)."""
    return int(llm.usage()["total"]["total_tokens"])


class Capture:
    """``before_send`` hook: every usage event the meter produced (on the reporter thread)."""

    def __init__(self) -> None:
        self.events: list[am.UsageEvent] = []

    def __call__(self, event: am.UsageEvent) -> am.UsageEvent:
        self.events.append(event)
        return event
