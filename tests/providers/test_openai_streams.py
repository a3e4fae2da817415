"""OpenAI streams: early ends (break, exception, close, GC, cancellation, a cut connection) are
metered once, estimated unless usage arrived; ``stream_options.include_usage`` is added on a copy
and its extra chunk hidden, left alone when the caller set it, and configurable per base URL."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import openai
import pytest

import aerostack_meter as am
from aerostack_meter._estimate import estimate_input_tokens
from tests.conftest import billed

from ._openai_support import (
    HX,
    MODEL,
    MODES,
    USER,
    Capture,
    client,
    clients,
    close,
    collect_garbage,
    drain,
    dump,
    enter,
    quick_gc,
    resolve,
    served_tokens,
)
from ._support import cancel_while_reading

__all__ = ["clients", "quick_gc"]  # fixtures


# -- early ends ---------------------------------------------------------------------------------

CHAT_KW: dict[str, Any] = {"model": MODEL, "messages": USER}
RESP_KW: dict[str, Any] = {"model": MODEL, "input": "hello harbour town, how are the boats today"}
COMPL_KW: dict[str, Any] = {"model": MODEL, "prompt": "once upon a time in a harbour town"}

# name -> (opener, request kwargs, is a stream helper returning a manager)
STREAMS: dict[str, tuple[Callable[..., Any], dict[str, Any], bool]] = {
    "chat.create": (lambda c, **kw: c.chat.completions.create(stream=True, **kw), CHAT_KW, False),
    "chat.stream-helper": (lambda c, **kw: c.chat.completions.stream(**kw), CHAT_KW, True),
    "responses.create": (lambda c, **kw: c.responses.create(stream=True, **kw), RESP_KW, False),
    "responses.stream-helper": (lambda c, **kw: c.responses.stream(**kw), RESP_KW, True),
    "completions.create": (lambda c, **kw: c.completions.create(stream=True, **kw), COMPL_KW, False),
}
# items to read before ending early: at least one with text (responses start with bookkeeping events)
LIMIT = {"chat.create": 3, "chat.stream-helper": 3, "responses.create": 6, "responses.stream-helper": 6,
         "completions.create": 3}
ENDINGS = ["break", "exception", "close", "gc", "cancel", "server-cut"]


class Boom(Exception):
    pass


async def _open(c: Any, name: str, **extra: Any) -> tuple[Any, Any]:
    """(stream, manager): helpers are entered by hand, as ``with`` would."""
    opener, kw, helper = STREAMS[name]
    obj = await resolve(opener(c, **kw, **extra))
    if not helper:
        return obj, None
    stream = await obj.__aenter__() if hasattr(type(obj), "__aenter__") else obj.__enter__()
    return stream, obj


@pytest.mark.parametrize("ending", ENDINGS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", list(STREAMS))
async def test_early_end_is_estimated_and_metered_once(name: str, mode: str, ending: str, mock_llm: Any,
                                                       gateway: Any, capture: Capture) -> None:
    c = client(mock_llm, mode)
    if not hasattr(c, name.split(".")[0]) or (name == "chat.stream-helper" and not hasattr(c.chat.completions, "stream")):
        pytest.skip(f"openai {openai.__version__} has no {name}")
    if ending == "cancel" and mode == "sync":
        pytest.skip("cancellation is an asyncio ending")
    opener, kw, _ = STREAMS[name]
    got: list[Any] = []

    if ending in ("break", "exception"):
        stream = await resolve(opener(c, **kw))
        with pytest.raises(Boom) if ending == "exception" else _nothing():
            async with enter(stream) as s:
                got = await drain(s, limit=LIMIT[name])
                if ending == "exception":
                    raise Boom
    elif ending == "close":
        s, _ = await _open(c, name)
        got = await drain(s, limit=LIMIT[name])
        await close(s)  # a helper's close() goes through our hook on the helper class
    elif ending == "gc":
        s, manager = await _open(c, name)
        got = await drain(s, limit=LIMIT[name])
        del s, manager
        await collect_garbage()
    elif ending == "cancel":

        async def consume(keep: Callable[[Any], None]) -> None:
            s, _ = await _open(c, name, extra_headers={"x-mock-chunk-delay-ms": "200"})
            async for item in s:
                keep(item)

        got = await cancel_while_reading(consume, LIMIT[name])
    else:  # the server cuts the connection after two content chunks: the SDK raises in the loop
        s, manager = await _open(c, name, extra_headers={"x-mock-stream-error-after": "2"})
        with pytest.raises(Exception):  # noqa: B017 - whatever the SDK version raises for a cut stream
            await drain(s, into=got)
        if manager is not None:
            await resolve(manager.__aexit__(None, None, None) if hasattr(type(manager), "__aexit__")
                          else manager.__exit__(None, None, None))

    assert got, "the stream yielded nothing before it ended"
    totals = billed(gateway)
    [event] = capture.events
    assert event.estimated is True
    assert event.units >= estimate_input_tokens(kw) + 1  # input from the request, output from deltas
    assert totals == {"default": event.units}
    stats = am.stats()
    assert (stats.calls_metered, stats.events_estimated, stats.usage_missing) == (1, 1, 0)
    await collect_garbage()  # a late finalizer must not bill it again
    assert billed(gateway) == {"default": event.units} and am.stats().calls_metered == 1


@pytest.mark.parametrize("mode", MODES)
async def test_a_stream_dropped_before_its_first_chunk_is_estimated_once(mode: str, mock_llm: Any, gateway: Any,
                                                                         capture: Capture) -> None:
    """The garbage-collection fallback is armed when the stream is handed out, not at its first
    chunk: a stream nobody reads is still billed (the input estimated from the request)."""
    c = client(mock_llm, mode)
    s = await resolve(c.chat.completions.create(stream=True, **CHAT_KW))
    assert isinstance(s, openai.AsyncStream if mode == "async" else openai.Stream)
    del s
    await collect_garbage()
    totals = billed(gateway)  # flushed: the estimate is made on the reporter thread
    [event] = capture.events
    assert event.estimated is True and event.units >= estimate_input_tokens(CHAT_KW)
    assert totals == {"default": event.units}
    stats = am.stats()
    assert (stats.calls_metered, stats.events_estimated, stats.usage_missing) == (1, 1, 0)
    await collect_garbage()
    assert am.stats().calls_metered == 1


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


@pytest.mark.parametrize("mode", MODES)
async def test_usage_that_arrived_before_the_break_is_exact(mode: str, mock_llm: Any, gateway: Any,
                                                            capture: Capture) -> None:
    c = client(mock_llm, mode)
    if not hasattr(c, "responses"):
        pytest.skip(f"openai {openai.__version__} has no responses")
    before = served_tokens(mock_llm)
    stream = await resolve(c.responses.create(stream=True, **RESP_KW))
    async with enter(stream) as s:
        async for event in s if hasattr(s, "__aiter__") else _aiter(s):
            if event.type == "response.completed":
                break  # the stream has not ended yet: [DONE]/the close are still to come
    served = served_tokens(mock_llm) - before
    assert billed(gateway) == {"default": served}
    assert [e.estimated for e in capture.events] == [False]


async def _aiter(it: Any) -> Any:
    for x in it:
        yield x


# -- include_usage ------------------------------------------------------------------------------

async def _chunks(c: Any, **kw: Any) -> list[Any]:
    s = await resolve(c.chat.completions.create(model=MODEL, messages=USER, stream=True, **kw))
    return await drain(s)


@pytest.mark.parametrize("mode", MODES)
async def test_a_loop_left_and_resumed_reads_one_stream_billed_once(mode: str, mock_llm: Any, gateway: Any,
                                                                    capture: Capture) -> None:
    """``next()``, a loop left by ``break`` and a second loop over the same stream read it on
    from where it stopped (every loop reads the one stream): every chunk once, usage exact, once."""
    c = client(mock_llm, mode)
    before = served_tokens(mock_llm)
    s = await resolve(c.chat.completions.create(model=MODEL, messages=USER, stream=True))
    first = [await (s.__anext__() if mode == "async" else _sync(next, s))]
    head = await drain(s, limit=2)
    rest = await drain(s)
    am.uninstrument()
    bare = await drain(await resolve(c.chat.completions.create(model=MODEL, messages=USER, stream=True)))
    assert dump(first + head + rest) == dump(bare)  # no chunk lost, repeated or reordered
    served = served_tokens(mock_llm) - before
    assert served > 0 and billed(gateway) == {"default": served}
    assert [e.estimated for e in capture.events] == [False]
    await collect_garbage()
    assert billed(gateway) == {"default": served} and am.stats().calls_metered == 1


def _loop_of(s: Any, mode: str) -> Any:
    return s.__aiter__() if mode == "async" else iter(s)


async def _next_of(it: Any, mode: str) -> Any:
    return await it.__anext__() if mode == "async" else next(it)


async def _close_loop(it: Any, mode: str) -> None:
    await (it.aclose() if mode == "async" else _sync(it.close))


@pytest.mark.parametrize("mode", MODES)
async def test_each_loop_over_a_stream_is_its_own_as_bare(mode: str, mock_llm: Any, gateway: Any,
                                                           capture: Capture) -> None:
    """As the SDK's ``Stream.__iter__`` / ``__aiter__`` (a new generator per call over the one
    stream), each ``iter(stream)`` of a metered stream is a new iterator, and closing one leaves
    the stream open: a later loop reads on where it stopped. Billed exactly, once."""
    c = client(mock_llm, mode)
    before = served_tokens(mock_llm)
    s = await resolve(c.chat.completions.create(model=MODEL, messages=USER, stream=True))
    one, two = _loop_of(s, mode), _loop_of(s, mode)
    first = [await _next_of(one, mode), await _next_of(two, mode)]
    await _close_loop(one, mode)
    await _close_loop(two, mode)
    rest = await drain(s)
    am.uninstrument()
    b = await resolve(c.chat.completions.create(model=MODEL, messages=USER, stream=True))
    assert (one is two) == (_loop_of(b, mode) is _loop_of(b, mode)) is False
    loop = _loop_of(b, mode)
    bare_first = [await _next_of(loop, mode)]
    await _close_loop(loop, mode)
    bare = bare_first + await drain(b)
    assert len(rest) > 2 and dump(first + rest) == dump(bare)  # no chunk lost, repeated or reordered
    served = served_tokens(mock_llm) - before
    assert served > 0 and billed(gateway) == {"default": served}
    assert [e.estimated for e in capture.events] == [False]
    await collect_garbage()
    assert billed(gateway) == {"default": served} and am.stats().calls_metered == 1


@pytest.mark.parametrize("how", ["close", "with"])
@pytest.mark.parametrize("mode", MODES)
async def test_a_chat_stream_left_at_finish_reason_is_estimated_once(mode: str, how: str, mock_llm: Any,
                                                                     gateway: Any, capture: Capture) -> None:
    """A loop that stops at the chunk with ``finish_reason``, then ``close()`` or the end of a
    ``with`` block: the usage chunk the meter asked for comes after it and is never read (reading
    on would make ``close()`` wait on the network; no transport says the body is all received).
    Billed once, as an estimate, counted in ``stats().events_estimated`` (docs/providers/openai.md)."""
    c = client(mock_llm, mode)
    before = served_tokens(mock_llm)
    s = await resolve(c.chat.completions.create(model=MODEL, messages=USER, stream=True))

    async def read_to_finish() -> list[Any]:
        got = []
        async for chunk in _as_async(s, mode):
            got.append(chunk)
            if chunk.choices and chunk.choices[0].finish_reason is not None:
                break
        return got

    if how == "with":
        async with enter(s):
            got = await read_to_finish()
    else:
        got = await read_to_finish()
        await close(s)
    assert got[-1].choices[0].finish_reason == "stop"
    served = served_tokens(mock_llm) - before
    units = billed(gateway)["default"]
    assert served > 0 and units != served  # the exact count never arrived
    assert [(e.units, e.estimated) for e in capture.events] == [(units, True)]
    st = am.stats()
    assert (st.calls_metered, st.events_estimated, st.usage_missing, st.internal_errors) == (1, 1, 0, 0)


async def _as_async(s: Any, mode: str) -> Any:
    if mode == "async":
        async for chunk in s:
            yield chunk
    else:
        for chunk in s:
            yield chunk


@pytest.mark.parametrize("mode", MODES)
async def test_injected_usage_chunk_is_hidden(mode: str, mock_llm: Any, gateway: Any, capture: Capture) -> None:
    options = {"include_obfuscation": False}  # the caller's stream_options, without include_usage
    before = served_tokens(mock_llm)
    got = await _chunks(client(mock_llm, mode), stream_options=options)
    assert options == {"include_obfuscation": False}  # merged into a copy, never mutated
    served = served_tokens(mock_llm) - before
    assert served > 0 and billed(gateway) == {"default": served}  # the server did send usage
    assert all(chunk.choices for chunk in got)  # a loop over chunk.choices[0] works as without us
    assert all(chunk.usage is None and "usage" not in chunk.to_dict() for chunk in got)
    am.uninstrument()
    assert dump(got) == dump(await _chunks(client(mock_llm, mode), stream_options=options))


@pytest.mark.parametrize("mode", MODES)
async def test_caller_include_usage_true_passes_through(mode: str, mock_llm: Any, gateway: Any,
                                                        capture: Capture) -> None:
    before = served_tokens(mock_llm)
    got = await _chunks(client(mock_llm, mode), stream_options={"include_usage": True})
    served = served_tokens(mock_llm) - before
    assert got[-1].choices == [] and got[-1].usage.total_tokens == served  # the caller sees its chunk
    assert billed(gateway) == {"default": served}
    am.uninstrument()
    assert dump(got) == dump(await _chunks(client(mock_llm, mode), stream_options={"include_usage": True}))


@pytest.mark.parametrize("mode", MODES)
async def test_caller_include_usage_false_is_respected(mode: str, mock_llm: Any, gateway: Any,
                                                       capture: Capture) -> None:
    before = served_tokens(mock_llm)
    got = await _chunks(client(mock_llm, mode), stream_options={"include_usage": False})
    assert served_tokens(mock_llm) == before  # nothing asked for usage, none was sent
    assert billed(gateway) == {}
    stats = am.stats()
    assert (stats.calls_metered, stats.usage_missing) == (0, 1)
    am.uninstrument()
    assert dump(got) == dump(await _chunks(client(mock_llm, mode), stream_options={"include_usage": False}))


@pytest.mark.parametrize("mode", MODES)
async def test_the_callers_extra_body_keeps_the_stream_exact(mode: str, mock_llm: Any, gateway: Any,
                                                             capture: Capture) -> None:
    """``extra_body`` (vLLM's ``top_k``, a router's options) is merged by the SDK over the body:
    ``include_usage`` is still added (on the body, under the caller's keys) and its chunk hidden."""
    extra = {"top_k": 5}
    before = served_tokens(mock_llm)
    got = await _chunks(client(mock_llm, mode), extra_body=extra)
    assert extra == {"top_k": 5}
    served = served_tokens(mock_llm) - before
    assert served > 0 and billed(gateway) == {"default": served}
    assert am.stats().events_estimated == 0
    assert all(chunk.choices and "usage" not in chunk.to_dict() for chunk in got)
    am.uninstrument()
    assert dump(got) == dump(await _chunks(client(mock_llm, mode), extra_body=extra))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("include", [True, False])
async def test_stream_options_in_extra_body_are_the_callers(include: bool, mode: str, mock_llm: Any,
                                                            gateway: Any, capture: Capture) -> None:
    """The caller's own ``stream_options`` in ``extra_body`` win over the body's (the SDK's merge):
    sent as written and respected as if passed as ``stream_options=``."""
    extra = {"stream_options": {"include_usage": include}}
    before = served_tokens(mock_llm)
    got = await _chunks(client(mock_llm, mode), extra_body=extra)
    served = served_tokens(mock_llm) - before
    stats = am.stats()
    if include:
        assert got[-1].choices == [] and got[-1].usage.total_tokens == served  # the caller's chunk
        assert billed(gateway) == {"default": served}
        assert (stats.calls_metered, stats.usage_missing, stats.events_estimated) == (1, 0, 0)
    else:
        assert served == 0 and billed(gateway) == {}
        assert (stats.calls_metered, stats.usage_missing) == (0, 1)
    am.uninstrument()
    assert dump(got) == dump(await _chunks(client(mock_llm, mode), extra_body=extra))


def _off_for(url: str) -> list[Any]:
    return [False, {url: False}, {url + "/": False}, lambda base: base != url.rstrip("/")]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("setting", range(4), ids=["False", "mapping", "mapping-slash", "callable"])
async def test_stream_usage_off_for_a_base_url(setting: int, mode: str, mock_llm: Any, gateway: Any,
                                               meter_factory: Any) -> None:
    meter_factory(default_consumer_id="default", stream_usage=_off_for(mock_llm.url)[setting])
    before = served_tokens(mock_llm)
    got = await _chunks(client(mock_llm, mode))
    assert served_tokens(mock_llm) == before  # the field was not sent: no usage chunk came back
    assert billed(gateway) == {} and am.stats().usage_missing == 1
    am.uninstrument()
    assert dump(got) == dump(await _chunks(client(mock_llm, mode)))


@pytest.mark.parametrize("mode", MODES)
async def test_stream_usage_mapping_leaves_other_base_urls_on(mode: str, mock_llm: Any, gateway: Any,
                                                              meter_factory: Any) -> None:
    meter_factory(default_consumer_id="default", stream_usage={"https://other.example/v1": False})
    before = served_tokens(mock_llm)
    await _chunks(client(mock_llm, mode))
    assert billed(gateway) == {"default": served_tokens(mock_llm) - before} != {"default": 0}


async def test_stream_usage_callable_that_raises_leaves_the_request_alone(mock_llm: Any, gateway: Any,
                                                                          meter_factory: Any) -> None:
    def broken(base: str) -> bool:
        raise RuntimeError("boom")

    meter_factory(default_consumer_id="default", stream_usage=broken)
    got = await _chunks(client(mock_llm, "sync"))
    assert got and billed(gateway) == {} and am.stats().usage_missing == 1


# -- the proxy stays transparent ----------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
async def test_stream_proxy_keeps_the_sdk_stream_interface(mode: str, mock_llm: Any, gateway: Any,
                                                           capture: Capture) -> None:
    c = client(mock_llm, mode)
    s = await resolve(c.chat.completions.create(model=MODEL, messages=USER, stream=True))
    assert isinstance(s, openai.AsyncStream if mode == "async" else openai.Stream)
    assert s.response.status_code == 200 and s.response.headers["content-type"].startswith("text/event-stream")
    async with enter(s) as entered:
        assert entered is s  # `with` hands back the proxy, not the bare stream
        first = await (s.__anext__() if mode == "async" else _sync(next, s))
        assert first.choices[0].delta.role == "assistant"
        rest = await drain(entered)
    assert rest and billed(gateway) != {}
    assert [e.estimated for e in capture.events] == [False]


async def _sync(fn: Any, *args: Any) -> Any:
    return fn(*args)


# -- responses: usage from response.incomplete / response.failed --------------------------------

def _sse_transport(mode: str, terminal: str) -> Any:
    usage = {"input_tokens": 7, "input_tokens_details": {"cached_tokens": 2},
             "output_tokens": 5, "output_tokens_details": {"reasoning_tokens": 1}, "total_tokens": 12}
    base = {"id": "resp_x", "object": "response", "created_at": 1, "model": MODEL, "output": [],
            "status": "in_progress", "usage": None}
    events = [
        {"type": "response.created", "sequence_number": 0, "response": base},
        {"type": "response.output_text.delta", "sequence_number": 1, "item_id": "m", "output_index": 0,
         "content_index": 0, "delta": "half a", "logprobs": []},
        {"type": terminal, "sequence_number": 2,
         "response": {**base, "status": terminal.split(".")[1], "usage": usage}},
    ]
    body = b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events)

    def handler(request: Any) -> Any:
        return HX.Response(200, content=body, headers={"content-type": "text/event-stream"})

    transport = HX.MockTransport(handler)
    return HX.AsyncClient(transport=transport) if mode == "async" else HX.Client(transport=transport)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("terminal", ["response.completed", "response.incomplete", "response.failed"])
async def test_responses_usage_from_any_terminal_event(terminal: str, mode: str, mock_llm: Any, gateway: Any,
                                                       capture: Capture) -> None:
    c = client(mock_llm, mode, base_url="http://in-process.test/v1", http_client=_sse_transport(mode, terminal))
    if not hasattr(c, "responses"):
        pytest.skip(f"openai {openai.__version__} has no responses")
    s = await resolve(c.responses.create(stream=True, **RESP_KW))
    events = await drain(s)
    assert events[-1].type == terminal
    assert billed(gateway) == {"default": 12}
    [event] = capture.events
    assert (event.estimated, event.response_id, event.model) == (False, "resp_x", MODEL)


@pytest.mark.parametrize("mode", MODES)
async def test_a_copy_of_a_stream_is_a_copy_and_bills_once(mode: str, mock_llm: Any, gateway: Any,
                                                           meter: Any) -> None:
    """``copy.copy(stream)`` is the SDK's copy (sharing the original's events), not an error; the
    call is billed once, exactly, whichever copy reads the events."""
    import copy

    c = client(mock_llm, mode)
    before = served_tokens(mock_llm)
    stream = await resolve(c.chat.completions.create(model=MODEL, messages=USER, stream=True))
    twin = copy.copy(stream)
    assert isinstance(twin, openai.AsyncStream if mode == "async" else openai.Stream) and twin is not stream
    chunks = await drain(twin)
    assert chunks and all(ch.usage is None for ch in chunks)  # the injected usage chunk stays hidden
    assert billed(gateway) == {"default": served_tokens(mock_llm) - before}
    st = am.stats()
    assert (st.calls_metered, st.events_estimated) == (1, 0)
