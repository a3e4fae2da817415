"""Metering at the base client every call passes through (issue 18), and the two failing inputs of
issue 12: a raw ``with_streaming_response`` stream read line by line, and an Azure deployment that
refuses ``stream_options``. Real SDKs over real HTTP against the mock LLM (or the SDK's transport)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import openai
import pydantic
import pytest

import aerostack_meter as am
from tests.conftest import billed

from ._openai_support import (
    HX,
    MODEL,
    MODES,
    USER,
    Capture,
    client,
    clients,
    drain,
    enter,
    quick_gc,
    resolve,
    served_tokens,
)

__all__ = ["clients", "quick_gc"]  # fixtures


def _stats() -> Any:
    assert am.flush(10)
    return am.stats()


# -- references captured before init() --------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
async def test_methods_and_raw_resources_captured_before_init_are_metered(
        mode: str, mock_llm: Any, gateway: Any, meter_factory: Any) -> None:
    """What LangChain, the Agents SDK and instructor keep: a bound ``create``, a cached
    ``with_raw_response`` / ``with_streaming_response`` resource, all taken before ``init()``."""
    c = client(mock_llm, mode)
    create = c.chat.completions.create
    raw = c.chat.completions.with_raw_response
    streaming = c.chat.completions.with_streaming_response
    meter_factory(default_consumer_id="default")  # init() after the app's imports and set-up
    before = served_tokens(mock_llm)
    await resolve(create(model=MODEL, messages=USER))
    await drain(await resolve(create(model=MODEL, messages=USER, stream=True)))
    r = await resolve(raw.create(model=MODEL, messages=USER))
    r.parse()
    async with enter(streaming.create(model=MODEL, messages=USER)) as s:
        await resolve(s.parse())
    assert billed(gateway) == {"default": served_tokens(mock_llm) - before}
    st = _stats()
    assert (st.calls_metered, st.events_estimated, st.usage_missing, st.internal_errors) == (4, 0, 0, 0)


@pytest.mark.parametrize("mode", MODES)
async def test_client_post_is_metered(mode: str, mock_llm: Any, gateway: Any, meter: Any) -> None:
    """litellm calls the SDK's low-level ``client.post(...)``: metered by its endpoint path."""
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

    c = client(mock_llm, mode)
    before = served_tokens(mock_llm)
    r = await resolve(c.post("/chat/completions", body={"model": MODEL, "messages": USER},
                             cast_to=ChatCompletion))
    stream_cls = openai.AsyncStream if mode == "async" else openai.Stream
    s = await resolve(c.post("/chat/completions", body={"model": MODEL, "messages": USER, "stream": True},
                             cast_to=ChatCompletion, stream=True,
                             stream_cls=stream_cls[ChatCompletionChunk]))
    chunks = await drain(s)
    assert r.usage is not None and all(ch.choices for ch in chunks)  # the usage chunk is hidden
    assert billed(gateway) == {"default": served_tokens(mock_llm) - before}
    st = _stats()
    assert (st.calls_metered, st.usage_missing, st.internal_errors) == (2, 0, 0)


@pytest.mark.parametrize("mode", MODES)
async def test_the_callers_request_options_keep_their_body(mode: str, mock_llm: Any, gateway: Any,
                                                            meter: Any) -> None:
    """``include_usage`` goes on the SDK's request options for the call only (no copy of them):
    options a caller built and passes to ``client.request()`` again still carry the body they
    were given, unchanged, and each call is billed exactly with its usage chunk hidden."""
    from openai._models import FinalRequestOptions
    from openai.types.chat import ChatCompletionChunk

    c = client(mock_llm, mode)
    body = {"model": MODEL, "messages": USER, "stream": True}
    written = json.dumps(body)
    opts = FinalRequestOptions.construct(method="post", url="/chat/completions", json_data=body)
    given = opts.json_data
    stream_cls = (openai.AsyncStream if mode == "async" else openai.Stream)[ChatCompletionChunk]
    before = served_tokens(mock_llm)
    for _ in range(2):
        s = await resolve(c.request(ChatCompletionChunk, opts, stream=True, stream_cls=stream_cls))
        assert opts.json_data is given and json.dumps(given) == json.dumps(body) == written
        chunks = await drain(s)
        assert chunks and all(ch.choices for ch in chunks)  # the injected usage chunk is hidden
    assert billed(gateway) == {"default": served_tokens(mock_llm) - before}
    st = _stats()
    assert (st.calls_metered, st.events_estimated, st.usage_missing, st.internal_errors) == (2, 0, 0, 0)


@pytest.mark.parametrize("mode", MODES)
async def test_arguments_the_hooks_do_not_name_reach_the_sdk_as_given(mode: str, mock_llm: Any, gateway: Any,
                                                                      meter: Any) -> None:
    """The hooks name the SDK's own parameters (``cast_to, options, *, stream, stream_cls``); an
    argument they do not name (an older SDK's positional ``remaining_retries``, a keyword a newer
    one adds) goes to the SDK's function where the caller put it: this SDK answers with its own
    ``TypeError``, as bare, and a call written for it still works and is billed."""
    from openai._models import FinalRequestOptions
    from openai.types.chat import ChatCompletion

    c = client(mock_llm, mode)
    side = "AsyncAPIClient" if mode == "async" else "SyncAPIClient"

    def opts() -> Any:
        return FinalRequestOptions.construct(method="post", url="/chat/completions",
                                             json_data={"model": MODEL, "messages": USER})

    with pytest.raises(TypeError, match=rf"^{side}\.request\(\) takes 3 positional arguments but 4"):
        await resolve(c.request(ChatCompletion, opts(), 2))
    with pytest.raises(TypeError, match=rf"^{side}\.request\(\) got an unexpected keyword argument 'retries'"):
        await resolve(c.request(ChatCompletion, opts(), retries=2))
    before = served_tokens(mock_llm)
    r = await resolve(c.request(cast_to=ChatCompletion, options=opts()))
    assert r.usage is not None
    assert billed(gateway) == {"default": served_tokens(mock_llm) - before}
    assert _stats().calls_metered == 1


async def test_one_options_object_in_concurrent_calls_shows_no_injected_chunk(mock_llm: Any, gateway: Any,
                                                                             meter: Any) -> None:
    """Calls that share one request-options object at once (a caller's own, passed to
    ``client.request()`` from several tasks) each read the caller's body, not the body another call
    has on it in flight: none of them sees the usage chunk the meter asked for, and each is billed
    exactly."""
    import asyncio

    from openai._models import FinalRequestOptions
    from openai.types.chat import ChatCompletionChunk

    c = client(mock_llm, "async")
    body = {"model": MODEL, "messages": USER, "stream": True}
    opts = FinalRequestOptions.construct(method="post", url="/chat/completions", json_data=body)
    stream_cls = openai.AsyncStream[ChatCompletionChunk]
    before = served_tokens(mock_llm)

    async def one() -> list[Any]:
        return await drain(await c.request(ChatCompletionChunk, opts, stream=True, stream_cls=stream_cls))

    outs = await asyncio.gather(one(), one(), one())
    assert all(chunks and all(ch.choices for ch in chunks) for chunks in outs)
    assert len({len(chunks) for chunks in outs}) == 1
    assert json.dumps(opts.json_data) == json.dumps(body)
    assert billed(gateway) == {"default": served_tokens(mock_llm) - before}
    st = _stats()
    assert (st.calls_metered, st.events_estimated, st.usage_missing, st.internal_errors) == (3, 0, 0, 0)


# -- usage the server reported is billed even when the SDK raises afterwards -------------------

class Answer(pydantic.BaseModel):
    city: str


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("raw", [False, True])
async def test_parse_hitting_max_tokens_bills_the_reported_usage(mode: str, raw: bool, mock_llm: Any,
                                                                 gateway: Any, meter: Any) -> None:
    c = client(mock_llm, mode)
    if not hasattr(c.chat.completions, "parse"):
        pytest.skip(f"openai {openai.__version__} has no chat.completions.parse")
    before = served_tokens(mock_llm)
    with pytest.raises(openai.LengthFinishReasonError) as err:
        if raw:
            r = await resolve(c.chat.completions.with_raw_response.parse(
                model=MODEL, messages=USER, response_format=Answer, max_tokens=3))
            r.parse()
        else:
            await resolve(c.chat.completions.parse(model=MODEL, messages=USER, response_format=Answer,
                                                   max_tokens=3))
    served = served_tokens(mock_llm) - before
    assert served == err.value.completion.usage.total_tokens > 0
    assert billed(gateway) == {"default": served}
    st = _stats()
    assert (st.calls_metered, st.events_estimated, st.usage_missing) == (1, 0, 0)


@pytest.mark.parametrize("mode", MODES)
async def test_parse_failing_validation_bills_the_reported_usage(mode: str, mock_llm: Any, gateway: Any,
                                                                 meter: Any) -> None:
    c = client(mock_llm, mode)
    if not hasattr(c.chat.completions, "parse"):
        pytest.skip(f"openai {openai.__version__} has no chat.completions.parse")
    before = served_tokens(mock_llm)
    with pytest.raises(pydantic.ValidationError):  # the mock's words are not the JSON asked for
        await resolve(c.chat.completions.parse(model=MODEL, messages=USER, response_format=Answer))
    served = served_tokens(mock_llm) - before
    assert served > 0 and billed(gateway) == {"default": served}
    st = _stats()
    assert (st.calls_metered, st.events_estimated, st.usage_missing) == (1, 0, 0)


@pytest.mark.parametrize("mode", MODES)
async def test_an_http_error_is_neither_billed_nor_counted(mode: str, mock_llm: Any, gateway: Any,
                                                           meter: Any) -> None:
    c = client(mock_llm, mode)
    with pytest.raises(openai.APIStatusError):
        await resolve(c.chat.completions.create(model=MODEL, messages=USER,
                                                extra_headers={"x-mock-error": "500"}))
    assert billed(gateway) == {}
    st = _stats()
    assert (st.calls_metered, st.usage_missing, st.internal_errors) == (0, 0, 0)


# -- issue 12, input 1: with_streaming_response read with iter_lines() --------------------------

async def _lines(c: Any, mode: str, **extra: Any) -> list[str]:
    manager = c.chat.completions.with_streaming_response.create(model=MODEL, messages=USER, stream=True,
                                                                **extra)
    async with enter(manager) as r:
        if mode == "async":
            return [line async for line in r.iter_lines()]
        return list(r.iter_lines())


def _normalised(lines: list[str]) -> list[Any]:
    out = []
    for line in lines:
        if line.startswith("data: {"):
            d = json.loads(line[6:])
            d.pop("id", None)
            d.pop("created", None)
            out.append(d)
        else:
            out.append(line)
    return out


@pytest.mark.parametrize("mode", MODES)
async def test_raw_lines_are_the_servers_own_and_the_call_is_estimated(
        mode: str, mock_llm: Any, gateway: Any, meter: Any) -> None:
    """Nothing is injected where nothing could be hidden: every line the app reads is the line an
    unmetered run reads (no extra ``choices: []`` line, no ``"usage": null``), and the call is
    billed from an estimate (counted), never lost."""
    metered = await _lines(client(mock_llm, mode), mode)
    am.uninstrument()
    plain = await _lines(client(mock_llm, mode), mode)
    assert _normalised(metered) == _normalised(plain)
    assert all('"usage"' not in line for line in metered)
    assert all(json.loads(line[6:])["choices"] for line in metered if line.startswith("data: {"))
    assert billed(gateway)["default"] > 0
    st = _stats()
    assert (st.calls_metered, st.events_estimated, st.usage_missing, st.internal_errors) == (1, 1, 0, 0)


@pytest.mark.parametrize("mode", MODES)
async def test_raw_lines_with_the_callers_include_usage_are_billed_exactly(
        mode: str, mock_llm: Any, gateway: Any, meter: Any) -> None:
    before = served_tokens(mock_llm)
    lines = await _lines(client(mock_llm, mode), mode, stream_options={"include_usage": True})
    assert any('"usage": {' in line or '"usage":{' in line for line in lines)
    assert billed(gateway) == {"default": served_tokens(mock_llm) - before}
    st = _stats()
    assert (st.calls_metered, st.events_estimated) == (1, 0)


@pytest.mark.parametrize("mode", MODES)
async def test_a_raw_body_closed_unread_is_counted_missing(mode: str, mock_llm: Any, gateway: Any,
                                                           meter: Any) -> None:
    c = client(mock_llm, mode)
    async with enter(c.chat.completions.with_streaming_response.create(model=MODEL, messages=USER)):
        pass  # the app never reads the body
    assert billed(gateway) == {}
    st = _stats()
    assert (st.calls_metered, st.usage_missing, dict(st.missing)) == (0, 1, {"raw_unread": 1})


# -- issue 12, input 2: a deployment that refuses stream_options --------------------------------

def _refusing_transport(mode: str, llm: Any, seen: list[bool]) -> Any:
    """Azure ``api_version="2024-02-01"``: 400 "Unrecognized request argument supplied:
    stream_options" for any body carrying it; otherwise the mock LLM's answer."""
    forward = HX.Client(base_url=llm.url, timeout=10)

    def handle(request: Any) -> Any:
        body = json.loads(request.content)
        seen.append("stream_options" in body)
        if "stream_options" in body:
            return HX.Response(400, json={"error": {
                "message": "Unrecognized request argument supplied: stream_options",
                "type": "invalid_request_error", "param": None, "code": None}})
        r = forward.post("/chat/completions", content=request.content,
                         headers={"content-type": "application/json"})
        return HX.Response(r.status_code, headers={"content-type": r.headers["content-type"]},
                           content=r.content)

    transport = HX.MockTransport(handle)
    return HX.AsyncClient(transport=transport) if mode == "async" else HX.Client(transport=transport)


@pytest.mark.parametrize("mode", MODES)
async def test_a_destination_refusing_stream_options_gets_the_call_as_written(
        mode: str, mock_llm: Any, gateway: Any, meter_factory: Any) -> None:
    cap = Capture()
    meter_factory(default_consumer_id="default", before_send=cap)
    seen: list[bool] = []
    cls = openai.AsyncAzureOpenAI if mode == "async" else openai.AzureOpenAI
    c = cls(api_key="k", api_version="2024-02-01", azure_endpoint=f"https://refusing-{mode}.openai.azure.test",
            max_retries=0, http_client=_refusing_transport(mode, mock_llm, seen))
    for _ in range(2):
        chunks = await drain(await resolve(c.chat.completions.create(model=MODEL, messages=USER,
                                                                     stream=True)))
        assert chunks and all(ch.choices for ch in chunks)
    assert seen == [True, False, False]  # refused once, then never injected again for it
    st = _stats()
    assert (st.stream_options_rejected, st.calls_metered, st.events_estimated) == (1, 2, 2)
    assert [e.estimated for e in cap.events] == [True, True] and billed(gateway)["default"] > 0
    await resolve(c.close())


# -- Anthropic: the same layer ---------------------------------------------------------------------

def _anthropic(llm: Any, mode: str) -> Any:
    import anthropic

    cls = anthropic.AsyncAnthropic if mode == "async" else anthropic.Anthropic
    c = cls(api_key="sk-test", base_url=llm.anthropic_base_url, max_retries=0)
    return c


_ARGS: dict[str, Any] = {"model": "claude-mock", "max_tokens": 64, "messages": USER}


def _units(usage: Any) -> int:
    return (usage.input_tokens + (usage.cache_creation_input_tokens or 0)
            + (usage.cache_read_input_tokens or 0) + usage.output_tokens)


@pytest.mark.parametrize("mode", MODES)
async def test_anthropic_captured_before_init_and_raw_lines_are_billed_exactly(
        mode: str, mock_llm: Any, gateway: Any, meter_factory: Any) -> None:
    """Anthropic streams carry their usage in events the meter needs not ask for: a raw stream
    read line by line is billed exactly from the lines that pass, and the lines are the server's."""
    c = _anthropic(mock_llm, mode)
    create = c.messages.create
    streaming = c.messages.with_streaming_response
    meter_factory(default_consumer_id="default")
    msg = await resolve(create(**_ARGS))
    async with enter(streaming.create(**_ARGS, stream=True)) as r:
        lines = [line async for line in r.iter_lines()] if mode == "async" else list(r.iter_lines())
    start = next(json.loads(x[6:]) for x in lines if x.startswith("data: ") and "message_start" in x)
    delta = [json.loads(x[6:]) for x in lines if x.startswith("data: ") and "message_delta" in x][-1]
    streamed = start["message"]["usage"]["input_tokens"] + delta["usage"]["output_tokens"]
    assert billed(gateway) == {"default": _units(msg.usage) + streamed}
    st = _stats()
    assert (st.calls_metered, st.events_estimated, st.usage_missing, st.internal_errors) == (2, 0, 0, 0)
    await resolve(c.close())


@pytest.mark.parametrize("mode", MODES)
async def test_a_wrapped_client_stays_metered_after_uninstrument(mode: str, mock_llm: Any, gateway: Any,
                                                                 meter: Any) -> None:
    """``uninstrument()`` removes the base-client hooks; a call through a client wrapped earlier
    puts them back and is metered (and only it: the global patch stays off)."""
    wrapped = am.wrap(client(mock_llm, mode), consumer_id="w")
    am.uninstrument()
    before = served_tokens(mock_llm)
    await resolve(wrapped.chat.completions.create(model=MODEL, messages=USER))
    await resolve(client(mock_llm, mode).chat.completions.create(model=MODEL, messages=USER))
    one = (served_tokens(mock_llm) - before) // 2
    assert billed(gateway) == {"w": one}


# -- calls that fail: never billed, but a call the provider may have served is never invisible ----

@pytest.mark.parametrize("mode", MODES)
async def test_a_timeout_after_sending_is_counted_as_no_response(mode: str, mock_llm: Any, gateway: Any,
                                                                 meter: Any) -> None:
    c = client(mock_llm, mode, timeout=0.3)
    with pytest.raises(openai.APITimeoutError):
        await resolve(c.chat.completions.create(model=MODEL, messages=USER,
                                                extra_headers={"x-mock-latency-ms": "1500"}))
    assert billed(gateway) == {}
    st = _stats()
    assert (st.calls_metered, dict(st.missing)) == (0, {"no_response": 1})


async def test_a_cancelled_call_is_counted_as_no_response(mock_llm: Any, gateway: Any, meter: Any) -> None:
    c = client(mock_llm, "async")
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(c.chat.completions.create(
            model=MODEL, messages=USER, extra_headers={"x-mock-latency-ms": "1500"}), 0.3)
    st = _stats()
    assert (st.calls_metered, dict(st.missing)) == (0, {"no_response": 1})


class Cancelled(BaseException):
    """What trio raises in a cancelled task (and anyio on trio): not an ``Exception``, not asyncio's."""


def test_an_interrupted_call_is_counted_as_no_response(mock_llm: Any, gateway: Any, meter: Any) -> None:
    # The request reached the server (it served it), then the caller was interrupted: any
    # BaseException that is not an Exception (trio's Cancelled, KeyboardInterrupt) counts.
    def interrupt(response: Any) -> None:
        raise Cancelled()

    http = HX.Client(event_hooks={"response": [interrupt]})
    c = client(mock_llm, "sync", http_client=http)
    before = mock_llm.usage()["total"]["requests"]
    with pytest.raises(Cancelled):
        c.chat.completions.create(model=MODEL, messages=USER)
    http.close()
    assert mock_llm.usage()["total"]["requests"] == before + 1  # served
    st = _stats()
    assert (st.calls_metered, dict(st.missing)) == (0, {"no_response": 1})


@pytest.mark.parametrize("mode", MODES)
async def test_calls_the_provider_refused_or_never_received_are_not_counted(
        mode: str, mock_llm: Any, gateway: Any, meter: Any) -> None:
    with pytest.raises(openai.InternalServerError):  # answered: an error costs nothing
        await resolve(client(mock_llm, mode).chat.completions.create(
            model=MODEL, messages=USER, extra_headers={"x-mock-error": "500"}))
    with pytest.raises(openai.APIConnectionError):  # nothing reached a server
        await resolve(client(mock_llm, mode, base_url="http://127.0.0.1:9/v1").chat.completions.create(
            model=MODEL, messages=USER))
    st = _stats()
    assert (st.calls_metered, dict(st.missing)) == (0, {})


def test_a_bedrock_error_answer_is_not_no_response(meter: Any, mock_llm: Any) -> None:
    """botocore's own classes: a 408 ModelTimeoutException is an answer (a ClientError carrying the
    parsed error response), whatever its name says."""
    import boto3
    import botocore.exceptions
    from botocore.config import Config

    c = boto3.client("bedrock-runtime", endpoint_url=mock_llm.base_url, region_name="us-east-1",
                     aws_access_key_id="AKIDTEST", aws_secret_access_key="secret",
                     config=Config(retries={"max_attempts": 1}))

    def add_headers(request: Any, **_: Any) -> None:
        request.headers["x-mock-error"] = "408"

    c.meta.events.register("before-sign.bedrock-runtime.*", add_headers)
    with pytest.raises(botocore.exceptions.ClientError) as info:
        c.converse(modelId="anthropic.claude-3-haiku-20240307-v1:0",
                   messages=[{"role": "user", "content": [{"text": "hi"}]}])
    assert "Timeout" in type(info.value).__name__  # ModelTimeoutException
    st = _stats()
    assert (st.calls_metered, dict(st.missing)) == (0, {})
