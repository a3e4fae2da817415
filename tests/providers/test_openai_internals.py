"""What the OpenAI provider relies on beyond the SDK's public API, named one test each, so that an
SDK release that changes any of it fails here first (docs/providers/openai.md, "Relied on")."""

from __future__ import annotations

import importlib
from typing import Any

import openai
import pytest

import aerostack_meter as am
from aerostack_meter._streams import AsyncStreamProxy, StreamProxy
from aerostack_meter.providers.openai import PROVIDER

from ._openai_support import MODEL, MODES, USER, client, clients, enter, quick_gc, resolve

__all__ = ["clients", "quick_gc"]  # fixtures


def test_every_patch_target_resolves_in_this_sdk() -> None:
    """Targets the installed SDK lacks are skipped silently by design; the core ones must be found:
    the base client every call passes through, and the stream helpers' ``close()``."""
    found = set()
    for t in PROVIDER.all_targets():
        try:
            owner: Any = importlib.import_module(t.module)
        except ImportError:
            continue
        for part in t.path.split("."):
            owner = getattr(owner, part, None)
        if owner is not None:
            found.add(t.path)
    must = {"SyncAPIClient.request", "AsyncAPIClient.request", "SyncAPIClient._process_response",
            "AsyncAPIClient._process_response", "ChatCompletionStream.close",
            "AsyncChatCompletionStream.close"}
    if hasattr(openai.OpenAI(api_key="k"), "responses"):
        must |= {"ResponseStream.close", "AsyncResponseStream.close"}
    assert must <= found


def test_the_base_client_takes_options_and_keyword_only_process_response_arguments() -> None:
    """The HTTP layer reads ``request(cast_to, options, *, stream, stream_cls)`` and a keyword-only
    ``_process_response(*, cast_to, options, response, stream, ...)``."""
    import inspect

    from openai._base_client import AsyncAPIClient, SyncAPIClient

    for cls in (SyncAPIClient, AsyncAPIClient):
        params = inspect.signature(inspect.unwrap(cls.request)).parameters
        assert list(params)[:3] == ["self", "cast_to", "options"]
        assert {"stream", "stream_cls"} <= set(params)
        process = inspect.signature(inspect.unwrap(cls._process_response)).parameters
        assert all(p.kind is p.KEYWORD_ONLY for name, p in process.items() if name != "self")
        assert {"cast_to", "options", "response", "stream"} <= set(process)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("helper", ["chat", "responses"])
async def test_stream_helpers_keep_the_raw_stream_in_private_raw_stream(helper: str, mode: str, mock_llm: Any,
                                                                        meter: Any) -> None:
    """``ChatCompletionStream``/``ResponseStream`` (and async) store the stream ``create`` returned in
    ``_raw_stream`` and close the HTTP response directly: our close hook reads ``_raw_stream``."""
    c = client(mock_llm, mode)
    if helper == "chat":
        if not hasattr(c.chat.completions, "stream"):
            pytest.skip(f"openai {openai.__version__} has no chat stream helper")
        manager = c.chat.completions.stream(model=MODEL, messages=USER)
    else:
        if not hasattr(c, "responses"):
            pytest.skip(f"openai {openai.__version__} has no responses")
        manager = c.responses.stream(model=MODEL, input="hi there")
    async with enter(manager) as s:
        assert isinstance(s._raw_stream, AsyncStreamProxy if mode == "async" else StreamProxy)
        await resolve(s.close())
        assert s._raw_stream.response.is_closed
    assert am.flush(5) and am.stats().calls_metered == 1


@pytest.mark.parametrize("mode", MODES)
def test_resources_reach_their_client_through_private_client(mode: str, mock_llm: Any) -> None:
    """The per-base-URL ``stream_usage`` setting reads ``resource._client.base_url``."""
    c = client(mock_llm, mode)
    for resource in (c.chat.completions, c.completions, c.embeddings):
        assert resource._client is c
        assert str(resource._client.base_url).rstrip("/") == mock_llm.url


def test_model_fields_set_is_the_models_own_set() -> None:
    """Hiding the ``usage: null`` we caused from ``to_dict()`` discards it from ``model_fields_set``."""
    chunk = openai.types.chat.ChatCompletionChunk.construct(
        id="c", choices=[], created=0, model="m", object="chat.completion.chunk", usage=None)
    assert "usage" in chunk.to_dict()
    chunk.model_fields_set.discard("usage")
    assert "usage" not in chunk.to_dict()


@pytest.mark.parametrize("mode", MODES)
async def test_a_stream_iterates_as_its_private_iterator(mode: str, mock_llm: Any, meter: Any) -> None:
    """``Stream``/``AsyncStream`` re-yield the generator they keep in ``_iterator``: the meter
    iterates that one (``OpenAIEndpoint.events``), one layer less per chunk. A stream class that
    does more per event is iterated as it is (a subclass that overrides ``__iter__``)."""
    from aerostack_meter.providers._openai_endpoints import _reyields
    from aerostack_meter.providers.openai import CHAT_CREATE

    assert _reyields(openai.AsyncStream if mode == "async" else openai.Stream)
    s = await resolve(client(mock_llm, mode).chat.completions.create(model=MODEL, messages=USER, stream=True))
    inner = s.__wrapped__
    assert CHAT_CREATE.events(inner) is inner.__dict__["_iterator"]
    got = [c async for c in s] if mode == "async" else list(s)
    assert got and got[-1].choices[0].finish_reason == "stop"
    assert am.flush(5) and am.stats().calls_metered == 1

    class Observed(openai.Stream):  # type: ignore[type-arg]
        def __iter__(self) -> Any:
            for item in self._iterator:
                print(item)
                yield item

    assert not _reyields(Observed)


@pytest.mark.parametrize("mode", MODES)
async def test_legacy_raw_response_parse_is_cached(mode: str, mock_llm: Any) -> None:
    """``.with_raw_response`` of a non-streaming call: ``parse()`` returns the same object every time
    (the meter parses first, the user gets that object)."""
    c = client(mock_llm, mode)
    raw = await resolve(c.chat.completions.with_raw_response.create(model=MODEL, messages=USER))
    assert raw.parse() is raw.parse()


def test_base_url_text_follows_the_clients_current_url() -> None:
    """The base URL's text is built once per client URL object, and a client given a new base URL
    is looked up by the new one (``stream_usage`` and refused destinations are keyed by it)."""
    from aerostack_meter.providers._openai_endpoints import base_url

    c = openai.OpenAI(api_key="sk-test", base_url="http://127.0.0.1:9/v1/")
    assert base_url(c) == base_url(c.chat.completions) == "http://127.0.0.1:9/v1"
    c.base_url = "http://127.0.0.1:9/other/v2"  # type: ignore[assignment]
    assert base_url(c) == base_url(c.chat.completions) == "http://127.0.0.1:9/other/v2"
    other = openai.OpenAI(api_key="sk-test", base_url="http://127.0.0.1:9/third")
    assert base_url(other) == "http://127.0.0.1:9/third" and base_url(c) == "http://127.0.0.1:9/other/v2"
