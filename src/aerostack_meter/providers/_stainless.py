"""Metering where every call of a Stainless-generated SDK passes: its base client.

``openai`` and ``anthropic`` (every major we support) funnel every HTTP call through
``SyncAPIClient.request`` / ``AsyncAPIClient.request`` and then ``_process_response``. Metering
there, keyed by the endpoint path, covers what patching resource methods cannot: bound methods and
cached ``with_raw_response`` / ``with_streaming_response`` resources captured before ``init()``,
``client.post(...)`` used directly (litellm does), SDK helpers and surfaces nobody listed.

One call, two hooks:

- ``request`` (the call begins): who is billed, the endpoint's ``prepare`` (OpenAI's
  ``include_usage`` injection, only where the SDK hands the user a stream object whose injected
  chunk can be hidden), then the call. The prepared body is a new dict (the caller's is never
  changed) put on the SDK's own request options for the call and taken off again when it
  returns: the SDK copies the options at its entry, so no copy of ours is needed. If the server rejects the
  injected option (Azure: 400 "Unrecognized request argument supplied: stream_options"), the call
  is made again exactly as the caller wrote it, the destination is remembered, and its usage is
  estimated (``stats().stream_options_rejected``).
- ``_process_response`` (a 2xx arrived): the parsed result is metered as usual (a response, or a
  stream proxied event by event). If the SDK raises *after* the response arrived (a ``parse()``
  hitting ``max_tokens`` or failing validation), the usage in the body is billed, exactly, and
  the exception is the SDK's own. A raw response (``with_raw_response``, ``with_streaming_response``,
  ``cast_to=httpx.Response``) is metered from the bytes the user reads, whichever way they read
  them (``parse()``, ``iter_lines()``, ``read()``, ...): nothing is injected, nothing hidden, the
  bytes are the server's own.

A call seen by a method-level wrapper too (``wrap(client)`` routes its calls here with its
defaults, see :func:`aerostack_meter._wrapping.routed`) is metered once.
"""

from __future__ import annotations

import json
import logging
import sys
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from .._call import Call, Endpoint, Kind, Reducer
from .._log import log_limited
from .._meter import Meter
from .._wrapping import ACTIVE, ROUTE, PatchSet, Target, begin, finish, prefetch

__all__ = ["REQUEST_METHODS", "BaseClient"]

#: ``wrap()``'s tree: the base client's own request methods (``client.post(...)`` and the like).
#: A call through them reaches the HTTP layer like any other, so the proxy routes it there with
#: its meter and defaults (the layer meters only the endpoints it lists; anything else goes on
#: as sent).
REQUEST_METHODS: dict[str, Endpoint] = dict.fromkeys(("request", "get", "post", "put", "patch", "delete"),
                                                     Endpoint())

RAW_HEADER = "X-Stainless-Raw-Response"
_MAX_BODY = 16 * 1024 * 1024  # a raw JSON body larger than this is not kept for its usage
_MAX_URLS = 1024  # (method, url) pairs whose endpoint is remembered


class _State(Call):
    """A call metered at the HTTP layer, in flight between ``request`` and ``_process_response``
    (one object per call: the call itself, with the layer's state)."""

    __slots__ = ("body", "hint", "options", "prepared", "seen", "token")
    hint: Any  # the reducer's hint (begin())
    seen: bool  # _process_response took the call over
    token: Any  # ACTIVE as it was before the call (reset after it)
    options: Any  # the SDK's request options carrying the prepared body (None: sent as written)
    body: Any  # their body as the caller's call built it (put back by _restore)
    prepared: Any  # the body prepare made, on ``options`` while the call is in flight


# The prepared bodies on request options in flight: id -> (the prepared body, the caller's). A call
# that starts on options another call has in flight (one options object a caller passes to
# client.request() from several threads or tasks) reads the caller's body there, never ours.
_PREPARED: dict[int, tuple[Any, Any]] = {}


class _Prefetch(NamedTuple):
    """An async call with a budget: await :func:`prefetch` with these, then start again."""

    meter: Meter
    defaults: Any
    site: str


def _header(options: Any, name: str) -> Any:
    headers = getattr(options, "headers", None)
    if isinstance(headers, Mapping):
        return headers.get(name)
    return None


def _restore(state: _State) -> bool:
    """Put the caller's body back on the request options ``prepare`` changed (after the call, and
    before sending it again as written). False if that failed (then it is not sent again)."""
    options = state.options
    if options is None:
        return True
    state.options = None
    _PREPARED.pop(id(state.prepared), None)
    try:
        options.json_data = state.body
    except Exception:
        _internal(state.meter, "request")
        return False
    return True


@dataclass
class BaseClient:
    """A Stainless SDK's base client: ``module`` defines ``SyncAPIClient``/``AsyncAPIClient``;
    ``routes`` maps an endpoint path (``"/chat/completions"``, ``"/v1/messages"``) to the endpoint
    that meters it. Only POSTs to a listed path are metered; everything else passes untouched."""

    module: str
    routes: Mapping[str, Endpoint]

    def __post_init__(self) -> None:
        self._http_types: tuple[type, ...] | None = None
        self._patches = PatchSet(f"{self.module} base client", self._targets)
        self._global = False  # init() patched this SDK: calls outside wrap() are metered too
        self._suffixes = tuple(sorted(self.routes, key=len, reverse=True))
        # (method, url) -> (its endpoint or None, the endpoint's site): answered once per pair
        self._endpoints: dict[tuple[str, str], tuple[Endpoint | None, str]] = {}
        # named in errors (MissingConsumerError); built once, not per call
        self._sites = {id(e): f"{e.provider} {e.name}" for e in self.routes.values()}

    # -- installation -----------------------------------------------------------------------
    def _targets(self) -> list[Target]:
        return [
            Target(self.module, "SyncAPIClient.request", None, plain=self._request_hook(False)),
            Target(self.module, "AsyncAPIClient.request", None, plain=self._request_hook(True)),
            Target(self.module, "SyncAPIClient._process_response", None, plain=self._process_hook(False)),
            Target(self.module, "AsyncAPIClient._process_response", None, plain=self._process_hook(True)),
        ]

    def enable(self) -> None:
        """Meter every call of this SDK (``init()``)."""
        self._patches.patch()
        self._global = True

    def disable(self) -> None:
        """Remove the hooks (``uninstrument()``); a call through a client wrapped earlier puts
        them back (only its own calls are metered then)."""
        self._global = False
        self._patches.unpatch()

    def install(self) -> None:
        """Install the hooks for ``wrap()`` (calls outside a wrapped client stay unmetered)."""
        self._patches.patch()

    def targets(self) -> list[Target]:
        return self._targets()

    @property
    def installed(self) -> bool:
        return self._patches.patched

    def http_response_types(self) -> tuple[type, ...]:
        """``cast_to`` values that hand the user the HTTP response itself (``client.post(...,
        cast_to=httpx.Response)``)."""
        if self._http_types is None:
            import importlib

            module = importlib.import_module(self.module)
            fn = getattr(module, "http_response_types", None)  # 3.x: httpx and httpx2 responses
            hx = getattr(module, "httpx2", None) or module.httpx
            self._http_types = tuple(fn()) if fn is not None else (hx.Response,)
        return self._http_types

    # -- which endpoint -----------------------------------------------------------------------
    def endpoint_for(self, options: Any) -> Endpoint | None:
        method = getattr(options, "method", None)
        url = getattr(options, "url", None)
        if type(method) is str and type(url) is str:  # the SDK's own: answered once per (method, url)
            key = (method, url)
            found = self._endpoints.get(key)
            if found is None:
                endpoint = self._endpoint_for(method, url)
                found = (endpoint, self.site(endpoint) if endpoint is not None else "")
                if len(self._endpoints) >= _MAX_URLS:  # many distinct URLs (query strings): start over
                    self._endpoints.clear()
                self._endpoints[key] = found
            return found[0]
        return self._endpoint_for(method, url)

    def site(self, endpoint: Endpoint) -> str:
        """The endpoint's name in errors (MissingConsumerError): ``"<provider> <name>"``."""
        return self._sites.get(id(endpoint)) or f"{endpoint.provider} {endpoint.name}"

    def _endpoint_for(self, method: Any, url: Any) -> Endpoint | None:
        if not isinstance(method, str) or method.lower() != "post":
            return None
        if not isinstance(url, str):
            return None
        path = url.split("?", 1)[0] if url.startswith("/") else urlsplit(url).path
        endpoint = self.routes.get(path)
        if endpoint is None and not url.startswith("/"):  # an absolute URL given to client.post()
            for suffix in self._suffixes:
                if path.endswith(suffix):
                    return self.routes[suffix]
        return endpoint

    @property
    def hooks(self) -> PatchSet:
        """The hooks, for a wrapped client's call to put back if ``uninstrument()`` removed them."""
        return self._patches

    # -- request: the call begins ---------------------------------------------------------------
    def _request_hook(self, is_async: bool) -> Callable[[Callable[[], Meter | None], Any], Any]:
        base = self

        def factory(get_meter: Callable[[], Meter | None], wrapped: Any) -> Any:
            from .. import _global

            def start(instance: Any, options: Any, stream: Any, stream_cls: Any, prefetched: bool = False) -> Any:
                """The call begins: ``None`` to call straight through; else the call's state, the
                call then current until the caller's ``finally`` resets ``state.token`` and puts
                back the body ``prepare`` changed (:func:`_restore`). :func:`begin` does the
                attribution, prepare and budget (it may raise before anything is sent). On an
                event loop with a budget, a :class:`_Prefetch` first: await it, then start again
                with ``prefetched``."""
                if ACTIVE.get():
                    return None
                route = ROUTE.get()
                if route is not None:  # inside a wrap() proxy's call: its meter and defaults
                    meter, defaults = route.get_meter(), route.defaults
                elif base._global:
                    meter, defaults = _global._meter, None
                else:
                    return None
                if meter is None or meter.settings.disabled:
                    return None
                try:
                    try:  # the SDK's own (method, url) pairs are answered once
                        # (from the options' __dict__: an attribute of the SDK's pydantic model
                        # costs as much as that read and two subscripts)
                        fields = options.__dict__
                        endpoint, site = base._endpoints[(fields["method"], fields["url"])]
                        body = fields["json_data"]
                    except (KeyError, TypeError, AttributeError):
                        endpoint = base.endpoint_for(options)
                        if endpoint is None:
                            return None
                        site = base.site(endpoint)
                        body = getattr(options, "json_data", None)
                    if endpoint is None:
                        return None
                    if _PREPARED:  # another call's prepared body, in flight on these options
                        held = _PREPARED.get(id(body))
                        if held is not None and held[0] is body:
                            body = held[1]
                    if type(body) is not dict and not isinstance(body, Mapping):
                        return None
                    # Change the request only where the user gets the SDK's stream object (an
                    # injected chunk can be hidden there), and never where the caller's
                    # extra_body sets stream_options itself (the SDK merges extra_body over the
                    # body: the caller's wins, and the hint reads it from the merged view).
                    # (None: not a stream, nothing to prepare or to hint)
                    view = body
                    if stream or body.get("stream"):
                        extra = getattr(options, "extra_json", None)
                        prepare = stream_cls is not None and _header(options, RAW_HEADER) is None
                        if extra and (not isinstance(extra, Mapping) or "stream_options" in extra):
                            prepare = False
                            if isinstance(extra, Mapping):
                                view = {**body, **extra}
                    else:
                        prepare = None
                except Exception:
                    _internal(meter, "request")
                    return None
                if is_async and not prefetched and (
                        meter.settings.budget is not None or (defaults is not None and defaults.budget is not None)):
                    return _Prefetch(meter, defaults, site)
                state, new_body, hint = begin(meter, endpoint, defaults, instance, view, site, prepare,
                                              not is_async, _State)  # (positionally: cheaper)
                if state is None:
                    return None
                state.hint = hint
                state.seen = False
                state.options = None
                state.token = ACTIVE.set(state)
                if new_body is not view:
                    # In place, not on a copy: the SDK's request() copies its options before it
                    # reads them (a copy of ours cost ~18 k instructions per stream); the
                    # caller's finally puts the body back.
                    state.body = body
                    try:
                        options.json_data = new_body
                        state.prepared = new_body
                        _PREPARED[id(new_body)] = (new_body, body)
                        state.options = options
                    except Exception:  # sent as written
                        _internal(meter, "request")
                return state

            def unseen(state: _State) -> None:
                """The request returned without passing ``_process_response``: never invisible."""
                if not state.done:
                    state.end(None, reason="unprocessed")

            def retry(state: _State, instance: Any, exc: BaseException) -> bool:
                """The call raised: retry as the caller wrote it (the server refused what
                ``prepare`` changed; the caller's body is put back first)? If not, the call
                failed."""
                if state.options is None or not rejected(state, instance, exc) or not _restore(state):
                    state.fail(exc)
                    return False
                return True

            def rejected(state: _State, instance: Any, exc: BaseException) -> bool:
                """The server refused what ``prepare`` changed: retry as the caller wrote it?"""
                try:
                    hint = state.endpoint.rejected(state.meter, instance, exc, state.hint)
                except Exception:
                    _internal(state.meter, "rejected")
                    return False
                if hint is None:
                    return False
                state.hint = hint
                state.meter.counters.add("stream_options_rejected")
                return True

            if is_async:
                async def async_request(self: Any, cast_to: Any, options: Any, *rest: Any, stream: Any = False,
                                        stream_cls: Any = None, **more: Any) -> Any:
                    send = wrapped if not (rest or more) else _forwarding(wrapped, rest, more)
                    plan = start(self, options, stream, stream_cls)
                    if type(plan) is _Prefetch:  # a budget's balance, awaited
                        await prefetch(*plan)
                        plan = start(self, options, stream, stream_cls, True)
                    if plan is None:
                        return await send(self, cast_to, options, stream=stream, stream_cls=stream_cls)
                    state = plan
                    try:
                        try:
                            result = await send(self, cast_to, options, stream=stream, stream_cls=stream_cls)
                        except Exception as exc:
                            if not retry(state, self, exc):
                                raise
                            # as the caller wrote it
                            result = await send(self, cast_to, options, stream=stream, stream_cls=stream_cls)
                        if not state.seen:
                            unseen(state)
                        return result
                    except BaseException as exc:
                        state.fail(exc)
                        raise
                    finally:
                        if state.options is not None:
                            _restore(state)
                        ACTIVE.reset(state.token)

                return async_request

            def sync_request(self: Any, cast_to: Any, options: Any, *rest: Any, stream: Any = False,
                             stream_cls: Any = None, **more: Any) -> Any:
                send = wrapped if not (rest or more) else _forwarding(wrapped, rest, more)
                plan = start(self, options, stream, stream_cls)
                if plan is None:
                    return send(self, cast_to, options, stream=stream, stream_cls=stream_cls)
                state = plan
                try:
                    try:
                        result = send(self, cast_to, options, stream=stream, stream_cls=stream_cls)
                    except Exception as exc:
                        if not retry(state, self, exc):
                            raise
                        result = send(self, cast_to, options, stream=stream, stream_cls=stream_cls)  # as written
                    if not state.seen:
                        unseen(state)
                    return result
                except BaseException as exc:
                    state.fail(exc)
                    raise
                finally:
                    if state.options is not None:
                        _restore(state)
                    ACTIVE.reset(state.token)

            return sync_request

        return factory

    # -- _process_response: a 2xx arrived ---------------------------------------------------------
    def _process_hook(self, is_async: bool) -> Callable[[Callable[[], Meter | None], Any], Any]:
        base = self

        def factory(get_meter: Callable[[], Meter | None], wrapped: Any) -> Any:
            # A parsed result's class -> (the endpoint that said, its kind): a model or a stream
            # (never a raw response) is what the endpoint's kind() says of its class; finish() is
            # then told it (one lookup here instead of two, and no kind() call per call).
            kinds: dict[type, tuple[Endpoint, Kind]] = {}

            def learn(endpoint: Endpoint, result: Any) -> None:
                try:
                    kind = endpoint.kind(result)
                except Exception:
                    return  # finish() asks again, guarded
                if kind == "response" or kind == "stream":
                    kinds[type(result)] = (endpoint, kind)

            def raw_by_cast(state: _State, cast_to: Any, response: Any) -> bool:
                """``cast_to`` hands the user the HTTP response itself: meter the bytes they read,
                from before the SDK sees it. True if so (and True, with the call counted as an
                internal error, when looking failed)."""
                try:
                    if cast_to not in base.http_response_types():
                        return False
                except Exception:
                    _internal(state.meter, "raw")
                    state.fail()
                    return True
                observe_raw(state, response)
                return True

            def raw_by_header(state: _State, response: Any) -> bool:
                """The request asked for the raw response (``with_raw_response``,
                ``with_streaming_response``): meter the bytes the user reads. Asked after the SDK
                returned (the SDK reads none of the body for such a response, and reading the
                header costs more than the rest of the hook) and only of a result that may be
                one, or of an exception."""
                try:
                    if response.request.headers.get(RAW_HEADER) is None:
                        return False
                except Exception:
                    _internal(state.meter, "raw")
                    state.fail()
                    return True
                observe_raw(state, response)
                return True

            def observe_raw(state: _State, response: Any) -> None:
                try:
                    observe_body(response, state, is_async)
                except Exception:
                    _internal(state.meter, "raw")
                    state.fail()

            def failed(state: _State, response: Any, stream: Any) -> None:
                """The SDK raised after a 2xx (post-parse): bill the usage in the body, exactly."""
                call = state
                if call.done or raw_by_header(state, response):
                    return
                try:
                    body = json.loads(response.content) if not stream else None
                    usage = state.endpoint.usage(body) if isinstance(body, dict) else None
                except Exception:
                    usage = None
                call.end(usage)

            def settle(state: _State, response: Any, result: Any) -> Any:
                """A result of a class not seen yet for this endpoint (or one that may be the SDK's
                raw-response wrapper): meter the bytes if it is raw, else learn its kind and finish."""
                if _may_be_raw(result):
                    if raw_by_header(state, response):
                        return result
                else:
                    learn(state.endpoint, result)
                return finish(state, state.hint, result)

            if is_async:
                async def async_process(self: Any, *rest: Any, cast_to: Any, options: Any, response: Any, stream: Any,
                                        stream_cls: Any, retries_taken: Any = 0, **more: Any) -> Any:
                    send = wrapped if not (rest or more) else _forwarding(wrapped, rest, more)
                    state = ACTIVE.get()
                    if type(state) is not _State or state.done or rest:
                        return await send(self, cast_to=cast_to, options=options, response=response, stream=stream,
                                          stream_cls=stream_cls, retries_taken=retries_taken)
                    state.seen = True
                    if (base._http_types is None or cast_to in base._http_types) and raw_by_cast(state, cast_to, response):
                        return await send(self, cast_to=cast_to, options=options, response=response, stream=stream,
                                          stream_cls=stream_cls, retries_taken=retries_taken)
                    try:
                        result = await send(self, cast_to=cast_to, options=options, response=response, stream=stream,
                                            stream_cls=stream_cls, retries_taken=retries_taken)
                    except Exception:
                        failed(state, response, stream)
                        raise
                    known = kinds.get(type(result))
                    if known is not None and known[0] is state.endpoint:
                        return finish(state, state.hint, result, known[1])
                    return settle(state, response, result)

                return async_process

            def sync_process(self: Any, *rest: Any, cast_to: Any, options: Any, response: Any, stream: Any,
                             stream_cls: Any, retries_taken: Any = 0, **more: Any) -> Any:
                send = wrapped if not (rest or more) else _forwarding(wrapped, rest, more)
                state = ACTIVE.get()
                if type(state) is not _State or state.done or rest:
                    return send(self, cast_to=cast_to, options=options, response=response, stream=stream,
                                stream_cls=stream_cls, retries_taken=retries_taken)
                state.seen = True
                if (base._http_types is None or cast_to in base._http_types) and raw_by_cast(state, cast_to, response):
                    return send(self, cast_to=cast_to, options=options, response=response, stream=stream,
                                stream_cls=stream_cls, retries_taken=retries_taken)
                try:
                    result = send(self, cast_to=cast_to, options=options, response=response, stream=stream,
                                  stream_cls=stream_cls, retries_taken=retries_taken)
                except Exception:
                    failed(state, response, stream)
                    raise
                known = kinds.get(type(result))
                if known is not None and known[0] is state.endpoint:
                    return finish(state, state.hint, result, known[1])
                return settle(state, response, result)

            return sync_process

        return factory


def _forwarding(wrapped: Any, rest: tuple[Any, ...], more: Mapping[str, Any]) -> Any:
    """``wrapped`` with the arguments the hook does not name put back where the caller gave them
    (an older SDK's ``request(cast_to, options, remaining_retries)``, a keyword a newer one
    adds). The hooks name the SDK's own parameters: forwarding ``*args, **kwargs`` built a tuple
    and a dict per call (~0.35 µs a hook)."""

    def send(self: Any, *args: Any, **kwargs: Any) -> Any:
        return wrapped(self, *args, *rest, **kwargs, **more)

    return send


_MAY_BE_RAW: dict[type, bool] = {}


def _may_be_raw(result: Any) -> bool:
    """Whether ``result`` may be the SDK's raw-response wrapper (``LegacyAPIResponse``,
    ``APIResponse``): anything but a parsed model or a stream (cached per class)."""
    cls = type(result)
    known = _MAY_BE_RAW.get(cls)
    if known is None:
        pydantic = sys.modules.get("pydantic")
        parsed = ((pydantic is not None and issubclass(cls, pydantic.BaseModel))
                  or hasattr(cls, "__next__") or hasattr(cls, "__anext__"))
        known = _MAY_BE_RAW[cls] = not parsed
    return known


def _internal(meter: Meter, where: str) -> None:
    meter.counters.add("internal_errors")
    log_limited("http_" + where, logging.ERROR, "aerostack_meter: internal error in %s; the call "
                "goes on unmetered", where, exc_info=True)


# -- raw bodies: metered from the bytes the user reads ------------------------------------------

class _Obj:
    """A JSON object with attribute access (absent names read as ``None``), so the reducers read
    events parsed from raw bytes as they read the SDK's models."""

    def __init__(self, d: Mapping[str, Any]) -> None:
        self.__dict__.update((k, _obj(v)) for k, v in d.items())

    def __getattr__(self, name: str) -> Any:
        return None


def _obj(value: Any) -> Any:
    if isinstance(value, dict):
        return _Obj(value)
    if isinstance(value, list):
        return [_obj(v) for v in value]
    return value


class _BodyObserver:
    """Follows the decoded bytes of one raw response: SSE events to the reducer, or a JSON body's
    usage at its end. Ends the call once: at the end of the body, on close, or when collected."""

    def __init__(self, state: _State, sse: bool) -> None:
        self.call = state
        self.endpoint = state.endpoint
        self.sse = sse
        self.reducer: Reducer | None = state.endpoint.reducer(state.kwargs, state.hint) if sse else None
        self.buf = bytearray()
        self.too_big = False
        self.failed = False
        self.pulling = 0  # reads of the body in progress (httpx closes the response inside one)
        self.done_seen = False  # the SSE "[DONE]" sentinel went by

    def feed(self, data: bytes) -> None:
        if self.call.done:
            return
        if not self.sse:
            if not self.too_big:
                self.buf += data
                if len(self.buf) > _MAX_BODY:
                    self.too_big = True
                    self.buf = bytearray()
            return
        self.buf += data
        while True:
            i = self.buf.find(b"\n")
            if i < 0:
                break
            line = bytes(self.buf[:i]).rstrip(b"\r")
            del self.buf[: i + 1]
            if line.startswith(b"data:"):
                self._event(line[5:].strip())

    def looks_complete(self) -> bool:
        """Whether what was read is the whole answer (the reader may stop short of the last bytes:
        the SDK closes the response once it has read ``[DONE]``)."""
        if self.sse:
            return self.done_seen or (self.reducer is not None and self.reducer.exact is not None)
        if self.too_big or not self.buf:
            return False
        try:
            json.loads(bytes(self.buf))
            return True
        except ValueError:
            return False

    def _event(self, payload: bytes) -> None:
        if payload == b"[DONE]":
            self.done_seen = True
            return
        if not payload or self.reducer is None:
            return
        try:
            value = json.loads(payload)
            if isinstance(value, dict):
                self.reducer.observe(_obj(value))
        except Exception:
            if not self.failed:
                self.failed = True
                _internal(self.call.meter, "raw_event")

    def end(self, complete: bool) -> None:
        if self.call.done:
            return
        if self.sse:
            assert self.reducer is not None
            self.call.end_stream(self.reducer, complete and not self.failed)
            return
        usage = None
        if complete and not self.too_big:
            try:
                body = json.loads(bytes(self.buf))
                usage = self.endpoint.usage(body) if isinstance(body, dict) else None
            except Exception:
                usage = None
        self.buf = bytearray()
        if usage is None and not complete:
            self.call.end(None, reason="raw_unread")
            return
        self.call.end(usage)

    def collected(self) -> None:
        if self.call.done:
            return
        if self.sse and self.reducer is not None:
            self.call.end_unfinished(self.reducer)
        else:
            self.end(False)


def observe_body(response: Any, state: _State, is_async: bool) -> None:
    """Meter ``response`` from what is read of it, without changing a byte."""
    sse = "event-stream" in response.headers.get("content-type", "")
    observer = _BodyObserver(state, sse)
    try:
        content = response.content  # a body read already (non-streamed request)
    except Exception:
        content = None
    if content is not None:
        observer.feed(content)
        observer.end(True)
        return
    finalizer = weakref.finalize(response, observer.collected)

    def ended(complete: bool) -> None:
        finalizer.detach()
        observer.end(complete or observer.looks_complete())

    if is_async:
        inner_aiter = response.aiter_bytes
        inner_aclose = response.aclose

        async def aiter_bytes(*args: Any, **kwargs: Any) -> Any:
            inner = inner_aiter(*args, **kwargs)
            complete = False
            try:
                while True:
                    observer.pulling += 1
                    try:
                        chunk = await inner.__anext__()
                    except StopAsyncIteration:
                        complete = True
                        break
                    finally:
                        observer.pulling -= 1
                    observer.feed(chunk)
                    yield chunk
            finally:
                ended(complete)
                await inner.aclose()

        async def aclose() -> None:
            # httpx closes the response itself at the end of the body, inside our read: that read
            # ends the observation. Any other close (the SDK after "[DONE]", the user) ends it here.
            if not observer.pulling:
                ended(False)
            await inner_aclose()

        response.aiter_bytes = aiter_bytes
        response.aclose = aclose
    else:
        inner_iter = response.iter_bytes
        inner_close = response.close

        def iter_bytes(*args: Any, **kwargs: Any) -> Any:
            inner = inner_iter(*args, **kwargs)
            complete = False
            try:
                while True:
                    observer.pulling += 1
                    try:
                        chunk = next(inner)
                    except StopIteration:
                        complete = True
                        break
                    finally:
                        observer.pulling -= 1
                    observer.feed(chunk)
                    yield chunk
            finally:
                ended(complete)
                inner.close()

        def close() -> None:
            if not observer.pulling:
                ended(False)
            inner_close()

        response.iter_bytes = iter_bytes
        response.close = close
