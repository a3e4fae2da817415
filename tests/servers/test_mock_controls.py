"""Each `x-mock-*` control, the server defaults, and the `/_mock/usage` bookkeeping."""

from __future__ import annotations

import json
import time
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest

from aerostack_meter.servers import MockLLMHandle, start_mock_llm

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hello big world"}]}  # P = 6
MSG = {
    "model": "c",
    "max_tokens": 100,
    "messages": [{"role": "user", "content": "hi you there"}],
}  # P = 6


def _chat(
    llm: MockLLMHandle, http: httpx.Client, headers: dict[str, str], **extra: Any
) -> httpx.Response:
    return http.post(f"{llm.url}/chat/completions", json={**CHAT, **extra}, headers=headers)


def _msg(
    llm: MockLLMHandle, http: httpx.Client, headers: dict[str, str], **extra: Any
) -> httpx.Response:
    return http.post(f"{llm.url}/messages", json={**MSG, **extra}, headers=headers)


def _data(response: httpx.Response) -> list[Any]:
    return [
        json.loads(line[6:])
        for line in response.text.splitlines()
        if line.startswith("data: ") and line != "data: [DONE]"
    ]


def test_cache_openai_and_anthropic(llm: MockLLMHandle, http: httpx.Client) -> None:
    u = _chat(llm, http, {"x-mock-cache": "4"}).json()["usage"]
    assert u["prompt_tokens"] == 6
    assert u["prompt_tokens_details"]["cached_tokens"] == 4
    # clamped to the prompt
    assert (
        _chat(llm, http, {"x-mock-cache": "99"}).json()["usage"]["prompt_tokens_details"][
            "cached_tokens"
        ]
        == 6
    )
    r = http.post(
        f"{llm.url}/responses",
        json={"model": "m", "input": "a b c"},
        headers={"x-mock-cache": "2", "x-mock-cache-write": "1"},
    )
    details = r.json()["usage"]["input_tokens_details"]
    assert details == {"cached_tokens": 2, "cache_write_tokens": 1}
    a = _msg(llm, http, {"x-mock-cache": "2", "x-mock-cache-write": "3"}).json()["usage"]
    assert a["cache_read_input_tokens"] == 2
    assert a["cache_creation_input_tokens"] == 3
    assert a["input_tokens"] == 6 - 2 - 3
    assert a["cache_creation"]["ephemeral_5m_input_tokens"] == 3
    # chat reports no cache writes: the control changes nothing there, and the tally says so
    c = _chat(llm, http, {"x-mock-cache": "1", "x-mock-cache-write": "4"}).json()["usage"]
    assert c["prompt_tokens_details"]["cached_tokens"] == 1 and "cache_write_tokens" not in str(c)
    totals = llm.usage()["total"]
    assert totals["cached_input_tokens"] == 4 + 6 + 2 + 2 + 1
    assert totals["cache_write_tokens"] == 1 + 3


def test_reasoning(llm: MockLLMHandle, http: httpx.Client) -> None:
    u = _chat(llm, http, {"x-mock-reasoning": "5"}).json()["usage"]
    assert u["completion_tokens"] == 15
    assert u["completion_tokens_details"]["reasoning_tokens"] == 5
    assert u["total_tokens"] == 21
    r = http.post(
        f"{llm.url}/responses", json={"model": "m", "input": "a"}, headers={"x-mock-reasoning": "7"}
    ).json()
    assert r["usage"]["output_tokens"] == 17
    assert r["usage"]["output_tokens_details"]["reasoning_tokens"] == 7
    a = _msg(llm, http, {"x-mock-reasoning": "2"}).json()["usage"]
    assert a["output_tokens"] == 12
    assert a["output_tokens_details"] == {"thinking_tokens": 2}
    assert llm.usage()["total"]["reasoning_tokens"] == 14


def test_web_search_anthropic(llm: MockLLMHandle, http: httpx.Client) -> None:
    a = _msg(llm, http, {"x-mock-web-search": "2"}).json()["usage"]
    assert a["server_tool_use"] == {"web_search_requests": 2, "web_fetch_requests": 0}


@pytest.mark.parametrize("status", [400, 429, 500, 529])
def test_error_openai_shape_and_not_tallied(llm: MockLLMHandle, status: int) -> None:
    client = openai.OpenAI(base_url=llm.url, api_key="x", max_retries=0)
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(**CHAT, extra_headers={"x-mock-error": str(status)})  # type: ignore[call-overload]
    assert info.value.status_code == status
    assert isinstance(info.value.body, dict) and "message" in info.value.body
    with pytest.raises(openai.APIStatusError):
        client.responses.create(
            model="m", input="x", stream=True, extra_headers={"x-mock-error": str(status)}
        )
    assert llm.usage()["total"]["requests"] == 0
    assert llm.stats()["errors"] == 2


def test_error_anthropic_shape(llm: MockLLMHandle, http: httpx.Client) -> None:
    client = anthropic.Anthropic(base_url=llm.anthropic_base_url, api_key="x", max_retries=0)
    with pytest.raises(anthropic.RateLimitError) as info:
        client.messages.create(**MSG, extra_headers={"x-mock-error": "429"})  # type: ignore[call-overload]
    assert info.value.status_code == 429
    body = _msg(llm, http, {"x-mock-error": "529"}).json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "overloaded_error"
    assert llm.usage()["total"]["requests"] == 0


def test_latency_header(llm: MockLLMHandle, http: httpx.Client) -> None:
    start = time.perf_counter()
    assert _chat(llm, http, {"x-mock-latency-ms": "200"}).status_code == 200
    assert time.perf_counter() - start >= 0.19


def test_chunk_delay_and_chunks(llm: MockLLMHandle, http: httpx.Client) -> None:
    start = time.perf_counter()
    r = _chat(llm, http, {"x-mock-chunk-delay-ms": "50", "x-mock-chunks": "4"}, stream=True)
    elapsed = time.perf_counter() - start
    contents = [
        c["choices"][0]["delta"]["content"]
        for c in _data(r)
        if c["choices"] and "content" in c["choices"][0]["delta"]
    ]
    assert contents[0] == ""  # the role chunk
    assert len(contents[1:]) == 4
    assert "".join(contents) == "hello big world hello big world hello big world hello"
    assert elapsed >= 0.15  # 3 delays between 4 chunks


def test_chunks_on_anthropic_and_responses(llm: MockLLMHandle, http: httpx.Client) -> None:
    r = _msg(llm, http, {"x-mock-chunks": "2"}, stream=True)
    assert r.text.count("event: content_block_delta") == 2
    r = http.post(
        f"{llm.url}/responses",
        json={"model": "m", "input": "a", "stream": True},
        headers={"x-mock-chunks": "3"},
    )
    assert r.text.count("event: response.output_text.delta") == 3


def test_output_tokens_header(llm: MockLLMHandle, http: httpx.Client) -> None:
    assert (
        _chat(llm, http, {"x-mock-output-tokens": "25"}).json()["usage"]["completion_tokens"] == 25
    )
    assert (
        _chat(llm, http, {"x-mock-output-tokens": "25"}, max_tokens=7).json()["usage"][
            "completion_tokens"
        ]
        == 7
    )


@pytest.mark.parametrize(
    ("mode", "check"),
    [
        ("null", lambda body: body["usage"] is None),
        ("missing", lambda body: "usage" not in body),
        (
            "negative",
            lambda body: (
                body["usage"]["prompt_tokens"] == -6 and body["usage"]["completion_tokens"] == -10
            ),
        ),
        ("string", lambda body: body["usage"]["prompt_tokens"] == "6"),
        ("huge", lambda body: body["usage"]["total_tokens"] == 2**70),
    ],
)
def test_usage_modes_json(llm: MockLLMHandle, http: httpx.Client, mode: str, check: Any) -> None:
    body = _chat(llm, http, {"x-mock-usage": mode}).json()
    assert check(body)
    assert body["choices"][0]["message"]["content"]
    assert llm.usage()["total"]["requests"] == 0  # hostile usage is never tallied


def test_usage_modes_streams(llm: MockLLMHandle, http: httpx.Client) -> None:
    chunks = _data(
        _chat(
            llm, http, {"x-mock-usage": "null"}, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] is None
    chunks = _data(
        _chat(
            llm,
            http,
            {"x-mock-usage": "missing"},
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "usage" not in chunks[-1]
    events = _data(_msg(llm, http, {"x-mock-usage": "string"}, stream=True))
    assert events[0]["message"]["usage"]["input_tokens"] == "6"
    deltas = [e for e in events if e["type"] == "message_delta"]
    assert deltas[-1]["usage"]["output_tokens"] == "10"
    events = _data(_msg(llm, http, {"x-mock-usage": "huge"}, stream=True))
    assert [e for e in events if e["type"] == "message_delta"][-1]["usage"][
        "output_tokens"
    ] == 2**70
    r = http.post(
        f"{llm.url}/responses",
        json={"model": "m", "input": "a", "stream": True},
        headers={"x-mock-usage": "negative"},
    )
    completed = _data(r)[-1]
    assert completed["type"] == "response.completed"
    assert completed["response"]["usage"]["output_tokens"] == -10
    assert llm.usage()["total"]["requests"] == 0


def test_usage_null_parsed_by_sdks(llm: MockLLMHandle) -> None:
    client = openai.OpenAI(base_url=llm.url, api_key="x", max_retries=0)
    r = client.chat.completions.create(**CHAT, extra_headers={"x-mock-usage": "null"})  # type: ignore[call-overload]
    assert r.usage is None
    a = anthropic.Anthropic(base_url=llm.anthropic_base_url, api_key="x", max_retries=0)
    m = a.messages.create(**MSG, extra_headers={"x-mock-usage": "string"})  # type: ignore[call-overload]
    assert m.usage.input_tokens == "6"  # the SDK does not validate: hostile values reach the caller


def test_repeat_deltas_are_cumulative(llm: MockLLMHandle, http: httpx.Client) -> None:
    events = _data(_msg(llm, http, {"x-mock-repeat-deltas": "1"}, stream=True))
    outs = [e["usage"]["output_tokens"] for e in events if e["type"] == "message_delta"]
    assert outs == [4, 7, 10, 10]
    assert events[-1]["type"] == "message_stop"
    client = anthropic.Anthropic(base_url=llm.anthropic_base_url, api_key="x", max_retries=0)
    with client.messages.stream(**MSG, extra_headers={"x-mock-repeat-deltas": "1"}) as stream:  # type: ignore[call-overload]
        assert stream.get_final_message().usage.output_tokens == 10
    assert llm.usage()["total"]["output_tokens"] == 20  # counted once per request


def test_stream_error_after_aborts_the_connection(llm: MockLLMHandle, http: httpx.Client) -> None:
    client = openai.OpenAI(base_url=llm.url, api_key="x", max_retries=0)
    got: list[str] = []
    with pytest.raises(openai.APIConnectionError):
        for chunk in client.chat.completions.create(
            **CHAT,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"x-mock-stream-error-after": "3"},
        ):  # type: ignore[call-overload]
            if chunk.choices and chunk.choices[0].delta.content:
                got.append(chunk.choices[0].delta.content)
    assert len(got) == 3
    a = anthropic.Anthropic(base_url=llm.anthropic_base_url, api_key="x", max_retries=0)
    # anthropic's stream lets the transport error through unwrapped
    with (
        pytest.raises((anthropic.APIConnectionError, httpx2.TransportError)),
        a.messages.stream(  # type: ignore[call-overload]
            **MSG, extra_headers={"x-mock-stream-error-after": "50"}
        ) as stream,
    ):
        stream.get_final_message()
    with pytest.raises(httpx.RemoteProtocolError):
        _chat(llm, http, {"x-mock-stream-error-after": "0"}, stream=True)
    assert llm.usage()["total"]["requests"] == 0
    assert llm.stats()["aborted_streams"] == 3


def test_stream_error_event(llm: MockLLMHandle) -> None:
    a = anthropic.Anthropic(base_url=llm.anthropic_base_url, api_key="x", max_retries=0)
    with (
        pytest.raises(anthropic.APIStatusError, match="overloaded"),
        a.messages.stream(  # type: ignore[call-overload]
            **MSG, extra_headers={"x-mock-stream-error-event": "2"}
        ) as stream,
    ):
        stream.get_final_message()
    client = openai.OpenAI(base_url=llm.url, api_key="x", max_retries=0)
    with pytest.raises(openai.APIError):
        list(
            client.chat.completions.create(
                **CHAT, stream=True, extra_headers={"x-mock-stream-error-event": "1"}
            )
        )  # type: ignore[call-overload]
    assert llm.stats()["stream_error_events"] == 2
    assert llm.usage()["total"]["requests"] == 0


def test_consumer_resolution(llm: MockLLMHandle, http: httpx.Client) -> None:
    _chat(llm, http, {"x-mock-consumer": "hdr"}, user="body_user")
    _chat(llm, http, {}, user="body_user")
    _chat(llm, http, {}, safety_identifier="safe")
    _msg(llm, http, {}, metadata={"user_id": "meta"})
    _chat(llm, http, {})
    assert set(llm.usage()["by_consumer"]) == {"hdr", "body_user", "safe", "meta", "anonymous"}


def test_bad_controls_and_bodies_are_400(llm: MockLLMHandle, http: httpx.Client) -> None:
    assert _chat(llm, http, {"x-mock-cache": "lots"}).status_code == 400
    assert _chat(llm, http, {"x-mock-usage": "weird"}).status_code == 400
    assert _chat(llm, http, {"x-mock-error": "200"}).status_code == 400
    r = http.post(f"{llm.url}/chat/completions", content=b"[1]")
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"
    r = http.post(f"{llm.url}/messages", content=b"nope")
    assert r.json()["type"] == "error"
    assert http.get(f"{llm.url}/chat/completions").status_code == 405
    assert llm.stats()["bad_requests"] == 6


def test_reset_clears_usage_and_stats(llm: MockLLMHandle, http: httpx.Client) -> None:
    _chat(llm, http, {})
    assert llm.usage()["total"]["requests"] == 1
    llm.reset()
    assert llm.usage() == {
        "total": dict.fromkeys(llm.usage()["total"], 0),
        "by_consumer": {},
        "by_endpoint": {},
    }
    assert llm.stats()["requests"] == 0


def test_server_defaults_and_header_override(http: httpx.Client) -> None:
    with start_mock_llm(cache=3, reasoning=2, output_tokens=4, latency_ms=0) as llm:
        u = _chat(llm, http, {}).json()["usage"]
        assert (u["prompt_tokens_details"]["cached_tokens"], u["completion_tokens"]) == (3, 6)
        u = _chat(llm, http, {"x-mock-reasoning": "0"}).json()["usage"]
        assert u["completion_tokens"] == 4
    with start_mock_llm(latency_ms=150) as slow:
        start = time.perf_counter()
        _chat(slow, http, {})
        assert time.perf_counter() - start >= 0.14
    with pytest.raises(TypeError):
        start_mock_llm(no_such_option=1)


def test_stop_does_not_wait_for_slow_streams(http: httpx.Client) -> None:
    llm = start_mock_llm(chunk_delay_ms=10_000)
    with http.stream("POST", f"{llm.url}/chat/completions", json={**CHAT, "stream": True}) as r:
        it = r.iter_lines()
        assert next(it).startswith("data: ")
        start = time.perf_counter()
        llm.stop()
        assert time.perf_counter() - start < 2.0
        with pytest.raises(httpx.RemoteProtocolError):
            list(it)


def test_client_leaving_a_stream_is_not_tallied(llm: MockLLMHandle) -> None:
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    with (
        httpx.Client(timeout=5) as http,
        http.stream(
            "POST",
            f"{llm.url}/chat/completions",
            json=body,
            headers={"x-mock-chunk-delay-ms": "100"},
        ) as r,
    ):
        assert next(r.iter_lines()).startswith("data: ")
    # the client closed the connection after the first event
    deadline = time.monotonic() + 5
    while llm.stats()["client_disconnects"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert llm.stats()["client_disconnects"] == 1
    assert llm.usage()["total"]["requests"] == 0


def test_a_client_leaving_a_stream_early_gets_no_more_writes(llm: MockLLMHandle,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """A long stream the client leaves after its first bytes: the server stops writing (the
    event loop sees the disconnect between frames), no ``socket.send() raised exception.`` noise."""
    caplog.set_level("WARNING", logger="asyncio")
    for _ in range(3):
        with httpx.Client() as http, http.stream(
                "POST", f"{llm.url}/chat/completions", json={**CHAT, "stream": True},
                headers={"x-mock-chunks": "400"}) as r:
            next(r.iter_raw())
    time.sleep(0.5)  # the server's side of three abandoned 400-chunk streams
    assert r.status_code == 200
    assert not [rec for rec in caplog.records if "socket.send()" in rec.getMessage()]
