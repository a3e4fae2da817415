"""One metered call's lifecycle, free of I/O: begin, observe stream events, end exactly once.

The provider seam lives here too: an :class:`Endpoint` says, for one family of SDK methods, how
to prepare the arguments, what kind of object a call returned, where usage lives in a response,
and how to reduce a stream's events to usage. Everything else is generic.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from ._estimate import estimate_input_tokens, tokens_from_chars
from ._log import log_limited
from ._usage import Usage

if TYPE_CHECKING:
    from ._budget import Reservation
    from ._meter import Attribution, Meter

__all__ = ["NO_KWARGS", "Call", "Endpoint", "Kind", "Reducer", "record_failed"]

Kind = Literal["response", "stream", "manager", "raw"]

_NO_KWARGS: Mapping[str, Any] = MappingProxyType({})
NO_KWARGS = _NO_KWARGS  # what an ended call holds in place of its request's arguments


class Reducer:
    """Per-stream state: folds events into usage. Providers subclass it and override ``observe``.

    ``observe`` returns True to hide an event from the user (an injected usage-only chunk).
    Cumulative fields are overwritten (last value wins), never added up.
    """

    __slots__ = ("chars", "exact", "kwargs", "model", "provider", "response_id")

    def __init__(self, provider: str, kwargs: Mapping[str, Any]) -> None:
        self.provider = provider
        self.kwargs = kwargs
        self.exact: Usage | None = None  # complete usage, once the provider sent it
        self.chars = 0  # output characters seen (for estimates only; no text is kept)
        model = kwargs.get("model")
        self.model: str | None = model if isinstance(model, str) else None
        self.response_id: str | None = None

    def observe(self, event: Any) -> bool:
        return False

    def partial(self) -> Usage | None:
        """Usage known exactly so far (e.g. Anthropic's input tokens from ``message_start``)."""
        return None

    def final(self, complete: bool) -> Usage | None:
        """Usage to bill when the stream ends; ``complete`` is False for an early end."""
        if self.exact is not None:
            return self.exact
        if complete and not self.estimate_when_complete():
            return None
        return self.estimate()

    def estimate_when_complete(self) -> bool:
        return False

    def estimate(self) -> Usage:
        known = self.partial()
        out = tokens_from_chars(self.chars) if self.chars else 0
        if known is not None:
            output = max(known.output_tokens, out)
            inp = known.input_tokens
            return Usage(self.provider, self.model, inp, output, inp + output,
                         known.cached_input_tokens, known.cache_write_tokens,
                         server_tool_use=known.server_tool_use, response_id=self.response_id,
                         estimated=True)
        inp = estimate_input_tokens(self.kwargs)
        return Usage(self.provider, self.model, inp, out, inp + out,
                     response_id=self.response_id, estimated=True)


class Endpoint:
    """What one family of SDK methods needs from a provider. Subclass per provider surface."""

    provider = "unknown"
    name = "call"
    #: whether ``kind()`` may say ``"manager"`` (a stream helper that sends when entered); only
    #: then does ``wrap()`` ask it of a result
    returns_manager = False
    #: whether the endpoint's responses bill output tokens (embeddings do not): a budget reserves
    #: no output for one that does not
    produces_output = True

    def prepare_call(self, meter: Meter, instance: Any, kwargs: dict[str, Any]) -> tuple[dict[str, Any], Any]:
        """Arguments to send (a copy if changed; never mutate the caller's) and a hint for the
        reducer; ``meter`` is at hand for per-meter settings (e.g. ``stream_usage``)."""
        return kwargs, None

    def passthrough(self, kwargs: Mapping[str, Any]) -> Any:
        """The reducer's hint for a request sent exactly as the caller wrote it (``prepare`` not
        run: the user reads the raw response, so nothing the meter adds could be hidden)."""
        return None

    def rejected(self, meter: Meter, instance: Any, exc: BaseException, hint: Any) -> Any:
        """The server refused a request ``prepare`` changed: a hint to retry it unchanged with
        (the destination remembered so later calls are not changed), or ``None`` to let ``exc``
        through."""
        return None

    def kind(self, result: Any) -> Kind:
        return "response"

    def usage(self, response: Any) -> Usage | None:
        """Usage in a parsed, complete response; ``None`` when it carries none."""
        return None

    def reducer(self, kwargs: Mapping[str, Any], hint: Any) -> Reducer:
        return Reducer(self.provider, kwargs)

    def events(self, stream: Any) -> Any:
        """What the meter iterates of an SDK stream it proxies: the stream itself, as the user's
        loop would, or an iterator that the stream's own ``__iter__``/``__aiter__`` (and
        ``__next__``/``__anext__``) only re-yield (one layer less per event; OpenAI's ``Stream``)."""
        return stream

    def stream_in(self, result: Any) -> Any:
        """The stream of a ``"stream"`` result: the result itself, or the stream a response object
        holds (an SDK that returns ``{"stream": <events>, ...}``)."""
        return result

    def with_stream(self, result: Any, stream: Any) -> Any:
        """What the caller gets once the stream is proxied: the proxy itself, or ``result`` with
        the proxy in place of the stream it held."""
        return stream

    def snapshot_usage(self, stream: Any, reducer: Reducer) -> Usage | None:
        """For stream managers: usage from the entered stream's final snapshot (None if unknown)."""
        return None

    def parse_raw(self, raw: Any) -> Any:
        """For raw responses: the parsed body, if it can be had without consuming anything."""
        return None


# nothing reached the provider (httpx, urllib3 and botocore names; also through an SDK's wrapper)
_NOT_SENT = frozenset({"ConnectError", "ConnectTimeout", "PoolTimeout", "ConnectTimeoutError",
                       "EndpointConnectionError", "NewConnectionError", "ConnectionRefusedError"})


def _answered(exc: BaseException) -> bool:
    """An error the server answered with (an HTTP status): the provider charged nothing."""
    if isinstance(getattr(exc, "status_code", None), int):  # openai, anthropic, mistral, httpx
        return True
    response = getattr(exc, "response", None)  # botocore's ClientError: the parsed error response
    return isinstance(response, dict) and "ResponseMetadata" in response


def _unanswered(exc: BaseException) -> bool:
    """Whether a failed request may have reached the provider without an answer: a timeout after
    the connection was made, a connection dropped mid-answer, or an interruption (asyncio's
    ``CancelledError``, trio's ``Cancelled``, anything else that is not an ``Exception``:
    ``KeyboardInterrupt``, gevent's ``GreenletExit``). By class names, so every SDK's and HTTP
    library's own classes count; the cause chain says if nothing was sent, and an error the
    server answered with is not one."""
    seen: BaseException | None = exc
    unanswered = False
    for _ in range(6):
        if seen is None:
            break
        name = type(seen).__name__
        if name in _NOT_SENT or _answered(seen):
            return False
        if (not isinstance(seen, Exception) or name == "CancelledError" or "Timeout" in name
                or name in ("RemoteProtocolError", "ReadError", "ProtocolError")):
            unanswered = True
        seen = seen.__cause__ or seen.__context__
    return unanswered


def record_failed(meter: Meter) -> None:
    """Recording a call's usage raised (a bug of ours): counted in ``internal_errors``, logged."""
    meter.counters.add("internal_errors")
    log_limited("call_end", logging.ERROR, "aerostack_meter: failed to record usage", exc_info=True)


class Call:
    """One call being metered; ends once, whichever of its endings comes first."""

    __slots__ = ("attribution", "done", "endpoint", "forks", "kwargs", "meter", "reservation")

    def __init__(self, meter: Meter, attribution: Attribution, endpoint: Endpoint,
                 kwargs: Mapping[str, Any]) -> None:
        # (_wrapping.begin sets the same fields itself, without this frame: keep them in step)
        self.meter = meter
        self.attribution = attribution
        self.endpoint = endpoint
        self.kwargs = kwargs
        self.done = False
        self.reservation: Reservation | None = None  # the budget's hold on this call's worst case
        # the meter's fork count when the call began: a call that outlives its frame (a stream, a
        # raw response) and is ended in a child forked meanwhile is the parent's to bill
        self.forks = meter._forks if meter._here[0] else meter._generation()

    def _forked_away(self) -> bool:
        """Whether this process forked from the one the call began in (which bills it): ended
        here, it is dropped without a count (the parent's own end counts it)."""
        if self.forks == self.meter._generation():
            return False
        self.kwargs = _NO_KWARGS
        return True

    def fail(self, exc: BaseException | None = None) -> None:
        """The request raised: nothing to bill; free the call's budget reservation at once. A
        request that may have reached the provider and got no answer (``exc``: a timeout after
        sending, a dropped connection, a cancellation) cannot be billed either, but it is counted
        in ``stats().missing["no_response"]`` and logged once: the provider may have charged."""
        if self.done:
            return
        self.done = True
        if self._forked_away():
            return
        self.kwargs = _NO_KWARGS
        if self.reservation is not None:
            self.reservation.release()
        if exc is not None and _unanswered(exc):
            try:
                self.meter.usage_missing(self.endpoint.provider, None, "no_response")
            except Exception:  # pragma: no cover - metering must never break the caller
                self.meter.counters.add("internal_errors")

    def end(self, usage: Usage | None, model: str | None = None, reason: str = "no_usage") -> None:
        """The one place a call that got a response ends: bill ``usage``, or count it missing
        (``reason`` in ``stats().missing``). Idempotent; never raises."""
        if self.done:
            return
        self.done = True
        if self._forked_away():
            return
        try:
            if usage is None:
                m = model or self.kwargs.get("model")
                self.meter.usage_missing(self.endpoint.provider, m if isinstance(m, str) else None,
                                         reason)
                if self.reservation is not None:
                    self.reservation.release()
            else:
                if self.reservation is not None:
                    self.reservation.hold(usage)
                self.meter.record(usage, self.attribution, self.reservation)
        except Exception:  # pragma: no cover - metering must never break the caller
            record_failed(self.meter)
        finally:
            self.kwargs = _NO_KWARGS  # drop the reference to the request (and its text) at once

    def end_unfinished(self, reducer: Reducer) -> None:
        """The GC fallback: hand the reducer to the reporter thread, which estimates it."""
        if self.done:
            return
        self.done = True
        if self._forked_away():
            return
        try:
            self.meter.record_unfinished(reducer, self.attribution, self.endpoint.provider,
                                         self.reservation)
        except Exception:  # pragma: no cover
            self.meter.counters.add("internal_errors")
        self.kwargs = _NO_KWARGS

    def end_stream(self, reducer: Reducer, complete: bool) -> None:
        if self.done:
            return
        try:
            usage = reducer.final(complete)
        except Exception:
            self.meter.counters.add("internal_errors")
            log_limited("reducer", logging.ERROR, "aerostack_meter: stream usage failed", exc_info=True)
            usage = None
        self.end(usage, reducer.model)
