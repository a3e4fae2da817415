"""Patching and proxying OpenAI clients: ``wrap()`` meters one client only and stays transparent;
patch + proxy, and SDK helpers that call another metered method, count once; ``uninstrument()``
restores the very same function objects; every client class (Azure too) is covered."""

from __future__ import annotations

import functools
import re
from typing import Any

import openai
import pytest
import wrapt

import aerostack_meter as am
from aerostack_meter.providers.openai import PROVIDER
from tests.conftest import billed

from ._openai_support import (
    HX,
    MODEL,
    MODES,
    SURFACES,
    USER,
    Capture,
    Surface,
    available,
    client,
    clients,
    drain,
    enter,
    quick_gc,
    resolve,
    served_tokens,
)

__all__ = ["clients", "quick_gc"]  # fixtures


# Every plain surface and one of each raw shape (the raw wrappers are rebuilt on the proxy: HELPER)
WRAP_SURFACES = [s for s in SURFACES if not s.name.endswith(("-raw", "-streaming"))] + [
    s for s in SURFACES if s.name in ("chat.create-raw", "chat.create-stream-streaming",
                                      "responses.create-stream-raw", "embeddings.create-streaming")]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("surface", WRAP_SURFACES, ids=str)
async def test_wrap_meters_that_client_only(surface: Surface, mode: str, mock_llm: Any, gateway: Any,
                                            meter_factory: Any) -> None:
    cap = Capture()
    meter_factory(instrument=False, before_send=cap, flush_interval=0.01)  # no patching at all
    plain = client(mock_llm, mode)
    if not available(surface, plain):
        pytest.skip(f"openai {openai.__version__} has no {surface}")
    wrapped = am.wrap(plain, consumer_id="acme")
    assert isinstance(wrapped, openai.AsyncOpenAI if mode == "async" else openai.OpenAI)
    before = served_tokens(mock_llm)
    got = await surface.run(wrapped)
    served = served_tokens(mock_llm) - before
    if surface.estimated:  # a raw stream sent as written: estimated
        assert served == 0 and billed(gateway)["acme"] > 0
    else:
        assert billed(gateway) == {"acme": served} != {"acme": 0}
    assert [e.estimated for e in cap.events] == [surface.estimated]
    assert await surface.run(plain) == got  # the client it wraps is not metered, and answers the same
    assert am.stats().calls_metered == 1


@pytest.mark.parametrize("mode", MODES)
async def test_wrap_is_transparent(mode: str, mock_llm: Any, meter_factory: Any) -> None:
    meter_factory(instrument=False)
    plain = client(mock_llm, mode, organization="org-x")
    wrapped = am.wrap(plain)
    assert isinstance(wrapped, type(plain))
    assert (wrapped.base_url, wrapped.api_key, wrapped.organization, wrapped.max_retries) == (
        plain.base_url, plain.api_key, "org-x", 0)
    assert isinstance(wrapped.chat.completions, type(plain.chat.completions))
    assert wrapped.models is plain.models  # resources we don't meter are the client's own
    assert repr(wrapped) == repr(plain)
    again = wrapped.with_options(timeout=7)
    assert isinstance(again, type(plain)) and again.timeout == 7
    assert am.wrap(wrapped).__wrapped__ is plain  # wrapping a wrapped client does not stack


@pytest.mark.parametrize("mode", MODES)
async def test_wrap_with_options_and_copy_stay_metered(mode: str, mock_llm: Any, gateway: Any,
                                                       meter_factory: Any) -> None:
    meter_factory(instrument=False)
    wrapped = am.wrap(client(mock_llm, mode), consumer_id="acme")
    before = served_tokens(mock_llm)
    await resolve(wrapped.with_options(timeout=9).chat.completions.create(model=MODEL, messages=USER))
    await resolve(wrapped.copy(max_retries=1).embeddings.create(model="emb-mock", input="hi there"))
    assert billed(gateway) == {"acme": served_tokens(mock_llm) - before}
    assert am.stats().calls_metered == 2


@pytest.mark.parametrize("mode", MODES)
async def test_patch_and_proxy_count_once(mode: str, mock_llm: Any, gateway: Any, meter: Any) -> None:
    wrapped = am.wrap(client(mock_llm, mode), consumer_id="acme")
    before = served_tokens(mock_llm)
    await resolve(wrapped.chat.completions.create(model=MODEL, messages=USER))
    raw = await resolve(wrapped.chat.completions.with_raw_response.create(model=MODEL, messages=USER))
    raw.parse()
    calls = 2
    if hasattr(wrapped.chat.completions, "stream"):  # not in 1.40 (beta only)
        async with enter(wrapped.chat.completions.stream(model=MODEL, messages=USER)) as s:
            await resolve(s.get_final_completion())  # the helper calls create: metered once, by the proxy
        calls += 1
    assert billed(gateway) == {"acme": served_tokens(mock_llm) - before}  # the proxy's consumer wins
    assert am.stats().calls_metered == calls


@pytest.mark.parametrize("mode", MODES)
async def test_helper_calling_create_counts_once(mode: str, mock_llm: Any, gateway: Any, meter: Any) -> None:
    """``chat.completions.stream`` and ``responses.stream`` call the patched ``create``; 1.40's
    ``beta.chat.completions.parse`` (a separate class, patched too) calls ``chat.completions.create``."""
    c = client(mock_llm, mode)
    before = served_tokens(mock_llm)
    if hasattr(c.chat.completions, "stream"):
        async with enter(c.chat.completions.stream(model=MODEL, messages=USER)) as s:
            await drain(s)
    else:  # 1.40
        await resolve(c.beta.chat.completions.parse(model=MODEL, messages=USER))
    assert billed(gateway) == {"default": served_tokens(mock_llm) - before}
    assert am.stats().calls_metered == 1


@pytest.mark.parametrize("mode", MODES)
async def test_consumer_scope_wins_over_the_default(mode: str, mock_llm: Any, gateway: Any, meter: Any) -> None:
    c = client(mock_llm, mode)
    before = served_tokens(mock_llm)
    with am.consumer("alice"):
        s = await resolve(c.chat.completions.create(model=MODEL, messages=USER, stream=True))
    await drain(s)  # consumed outside the scope: billed to whom the call was made for
    assert billed(gateway) == {"alice": served_tokens(mock_llm) - before}


# -- patching ---------------------------------------------------------------------------------

def _originals() -> dict[tuple[Any, str], Any]:
    import importlib

    out = {}
    for t in PROVIDER.all_targets():
        try:
            owner: Any = importlib.import_module(t.module)
        except ImportError:
            continue
        *parents, attr = t.path.split(".")
        for p in parents:
            owner = getattr(owner, p, None)
        if owner is not None and attr in vars(owner):
            out[(owner, attr)] = vars(owner)[attr]
    return out


def test_uninstrument_restores_the_very_same_functions(meter_factory: Any) -> None:
    before = _originals()
    assert len(before) >= 8  # the base client's request/_process_response, sync and async; close hooks
    meter_factory(default_consumer_id="default")
    patched = _originals()
    assert all(patched[k] is not v for k, v in before.items())  # every target is ours now
    assert am.instrument() == [] or _originals() == patched  # instrumenting twice is a no-op
    assert all(_originals()[k] is v for k, v in patched.items())
    am.uninstrument()
    assert all(_originals()[k] is v for k, v in before.items())
    am.uninstrument()  # twice: still the originals
    assert all(_originals()[k] is v for k, v in before.items())


def test_every_client_class_shares_the_patched_resources(meter: Any, mock_llm: Any) -> None:
    import openai.resources.chat.completions as chat

    classes = [openai.OpenAI, openai.AzureOpenAI]
    for cls in classes:
        kwargs: dict[str, Any] = {"api_key": "k"}
        if cls is openai.AzureOpenAI:
            kwargs |= {"api_version": "2024-06-01", "azure_endpoint": "https://x.openai.azure.com"}
        c = cls(**kwargs)
        assert type(c.chat.completions).__dict__["create"] is chat.Completions.__dict__["create"]


def _azure_transport(mode: str, llm: Any) -> Any:
    """Azure puts the deployment in the path; the mock serves /v1/chat/completions."""

    def rewrite(request: Any) -> Any:
        path = re.sub(r"/openai/deployments/[^/]+", "/v1", request.url.path)
        return request.url.copy_with(scheme="http", host="127.0.0.1", port=llm.port, path=path, query=None)

    if mode == "async":
        inner_async = HX.AsyncHTTPTransport()

        class AsyncRewrite(HX.AsyncBaseTransport):  # type: ignore[misc,name-defined]
            async def handle_async_request(self, request: Any) -> Any:
                request.url = rewrite(request)
                return await inner_async.handle_async_request(request)

            async def aclose(self) -> None:  # closing the client closes its connections
                await inner_async.aclose()

        return HX.AsyncClient(transport=AsyncRewrite())
    inner = HX.HTTPTransport()

    class Rewrite(HX.BaseTransport):  # type: ignore[misc,name-defined]
        def handle_request(self, request: Any) -> Any:
            request.url = rewrite(request)
            return inner.handle_request(request)

        def close(self) -> None:
            inner.close()

    return HX.Client(transport=Rewrite())


@pytest.mark.parametrize("mode", MODES)
async def test_azure_clients_are_metered(mode: str, mock_llm: Any, gateway: Any, meter: Any) -> None:
    cls = openai.AsyncAzureOpenAI if mode == "async" else openai.AzureOpenAI
    c = cls(api_key="k", api_version="2024-06-01", azure_endpoint="https://x.openai.azure.com",
            max_retries=0, http_client=_azure_transport(mode, mock_llm))
    before = served_tokens(mock_llm)
    r = await resolve(c.chat.completions.create(model=MODEL, messages=USER))
    s = await resolve(c.chat.completions.create(model=MODEL, messages=USER, stream=True))
    chunks = await drain(s)
    assert all(ch.choices for ch in chunks)
    served = served_tokens(mock_llm) - before
    assert served > r.usage.total_tokens
    assert billed(gateway) == {"default": served}
    await resolve(c.close())


@pytest.mark.parametrize("mode", MODES)
async def test_wrap_reuses_its_method_wrappers(mode: str, mock_llm: Any, gateway: Any, meter_factory: Any) -> None:
    """Each access of ``wrapped.chat.completions.create`` gets the same metered wrapper (the cache
    compares the function and instance a bound method binds); a method replaced on the resource
    gets a new one, and every call through either is billed."""
    meter_factory(instrument=False)
    plain = client(mock_llm, mode)
    wrapped = am.wrap(plain, consumer_id="acme")
    first = wrapped.chat.completions.create
    assert wrapped.chat.completions.create is first
    await resolve(first(model=MODEL, messages=USER))
    completions = plain.chat.completions
    original = type(completions).create

    @functools.wraps(original)
    def replaced(*args: Any, **kwargs: Any) -> Any:  # an instance attribute: another function
        return original(completions, *args, **kwargs)

    completions.create = replaced
    try:
        again = wrapped.chat.completions.create
        assert again is not first
        reply = await resolve(again(model=MODEL, messages=USER))
    finally:
        del completions.create
    assert am.flush(5)
    assert billed(gateway) == {"acme": 2 * reply.usage.total_tokens}


@pytest.mark.parametrize("mode", MODES)
async def test_wrap_keeps_its_resource_proxies(mode: str, mock_llm: Any, gateway: Any, meter_factory: Any) -> None:
    """A listed resource's proxy is made once per wrapped client (a repeated
    ``wrapped.chat.completions`` is the same object, read without code of ours); a resource
    assigned through the proxy replaces the client's, and is the one proxied (and metered) from
    then on."""
    meter_factory(instrument=False)
    plain = client(mock_llm, mode)
    wrapped = am.wrap(plain, consumer_id="acme")
    chat = wrapped.chat
    assert wrapped.chat is chat and wrapped.chat.completions is chat.completions
    assert chat.__wrapped__ is plain.chat and chat.completions.__wrapped__ is plain.chat.completions
    original = plain.chat
    replacement = type(original)(plain)
    wrapped.chat = replacement
    try:
        assert plain.chat is replacement
        assert wrapped.chat is not chat and wrapped.chat.__wrapped__ is replacement
        reply = await resolve(wrapped.chat.completions.create(model=MODEL, messages=USER))
        assert wrapped.chat.completions.create.__self__ is replacement.completions
    finally:
        wrapped.chat = original
    assert wrapped.chat.__wrapped__ is original
    assert am.flush(5)
    assert billed(gateway) == {"acme": reply.usage.total_tokens}


@pytest.mark.parametrize("mode", MODES)
async def test_wrap_forwards_every_other_name_live(mode: str, mock_llm: Any, meter_factory: Any) -> None:
    """A name the tree does not list is the client's, read, set and deleted there each time:
    after the first read the proxy's class answers it without a failed lookup, but keeps no
    value (each proxy reads its own client; a change on the client is seen)."""
    meter_factory(instrument=False)
    plain, other = client(mock_llm, mode), client(mock_llm, mode, organization="org-2")
    wrapped, wrapped_other = am.wrap(plain), am.wrap(other)
    for _ in range(2):  # the first read, then the class's
        assert (wrapped.organization, wrapped_other.organization) == (None, "org-2")
        assert wrapped.max_retries == 0
    plain.max_retries = 3
    assert wrapped.max_retries == 3
    wrapped.max_retries = 4
    assert plain.max_retries == 4 and wrapped_other.max_retries == 0
    plain.marker = "x"
    assert wrapped.marker == "x"
    del wrapped.marker
    assert not hasattr(plain, "marker")
    for _ in range(2):
        with pytest.raises(AttributeError, match="marker"):
            wrapped.marker  # noqa: B018
    assert (wrapped.__doc__, wrapped.__module__) == (plain.__doc__, plain.__module__)
    assert wrapped.chat.completions.__doc__ == plain.chat.completions.__doc__


@pytest.mark.skipif(int(wrapt.__version__.split(".")[0]) < 2, reason="wrapt 1 tells a proxy nothing")
@pytest.mark.parametrize("mode", MODES)
async def test_replacing_the_wrapped_client_forgets_what_was_made(mode: str, mock_llm: Any, gateway: Any,
                                                                  meter_factory: Any) -> None:
    meter_factory(instrument=False)
    plain, other = client(mock_llm, mode), client(mock_llm, mode)
    wrapped = am.wrap(plain, consumer_id="acme")
    create = wrapped.chat.completions.create
    wrapped.__wrapped__ = other
    assert wrapped.chat.__wrapped__ is other.chat
    assert wrapped.chat.completions.create is not create
    reply = await resolve(wrapped.chat.completions.create(model=MODEL, messages=USER))
    assert wrapped.chat.completions.create.__self__ is other.chat.completions
    assert am.flush(5)
    assert billed(gateway) == {"acme": reply.usage.total_tokens}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("path", ["chat.with_raw_response", "chat.with_streaming_response", "post",
                                  "beta.with_raw_response"])
async def test_every_way_through_the_proxy_is_metered(path: str, mode: str, mock_llm: Any, gateway: Any,
                                                      meter_factory: Any) -> None:
    """The intermediate resources' raw variants and the client's own request methods reach the
    HTTP layer too: through the proxy, billed to its consumer (never unmetered and uncounted)."""
    meter_factory(instrument=False, flush_interval=0.01)  # wrap() alone
    wrapped = am.wrap(client(mock_llm, mode), consumer_id="acme")
    msgs = [{"role": "user", "content": "hello big world"}]
    if path == "post":
        r = await resolve(wrapped.post("/chat/completions", body={"model": MODEL, "messages": msgs},
                                       cast_to=openai.types.chat.ChatCompletion))
    elif path == "chat.with_streaming_response":
        async with enter(wrapped.chat.with_streaming_response.completions.create(model=MODEL, messages=msgs)) as raw:
            r = await resolve(raw.parse())
    elif path == "beta.with_raw_response":
        beta = wrapped.beta.with_raw_response
        if not hasattr(beta, "chat"):
            pytest.skip(f"openai {openai.__version__} has no beta.chat")
        r = await resolve((await resolve(beta.chat.completions.create(model=MODEL, messages=msgs))).parse())
    else:
        raw = await resolve(wrapped.chat.with_raw_response.completions.create(model=MODEL, messages=msgs))
        r = await resolve(raw.parse())
    assert billed(gateway) == {"acme": r.usage.total_tokens} != {"acme": 0}
    assert am.stats().calls_metered == 1
