"""How a provider is declared: one module, data only, discovered through the registry.

A provider is a module under ``aerostack_meter.providers`` that defines ``PROVIDER``, a
:class:`Provider`, and is listed in :data:`aerostack_meter.providers.BUILTIN` (or registered at run
time with :func:`aerostack_meter.providers.register`). The core (``init()``, ``instrument()``,
``wrap()``, the settings, the meter) finds providers there and names none of them. The full guide,
with a worked example: ``docs/providers/README.md``.

The declaration::

    PROVIDER = Provider(
        name="mistral",                      # what init(instrument=("mistral",)) accepts
        package="mistralai",                 # the SDK's import name (dotted: "google.genai")
        distribution="mistralai",            # its name on the package index (for the version)
        versions=">=1.0,<3,!=2.4.6",         # tested range; outside it a warning is logged
        targets=lambda: [                    # patch targets, built when the SDK is imported
            Target("mistralai.chat", "Chat.complete", COMPLETE, is_async=False, returns="response"),
            Target("mistralai.chat", "Chat.complete_async", COMPLETE, is_async=True),
            Target("mistralai.chat", "Chat.stream", STREAM, is_async=False, returns="stream"),
        ],
        client_tree={"chat": {"complete": COMPLETE, "stream": STREAM}},  # what wrap(client) meters
    )

with the endpoints built from usage readers (no subclassing needed)::

    COMPLETE = ReaderEndpoint("mistral", "chat.complete", response=read_response_usage)
    STREAM = ReaderEndpoint("mistral", "chat.stream", response=read_response_usage,
                            event=read_event_usage, event_chars=read_event_chars)

Rules a provider module follows:

- **Importing it never imports its SDK** (``init()`` must not import an SDK the application does
  not use): import the SDK inside functions, or in a private module only the ``targets`` factory
  imports. ``targets`` is called once the SDK is imported.
- **Targets** (:class:`~aerostack_meter._wrapping.Target`): ``module`` (imported, never forced:
  a module not imported yet is patched on its import), ``path`` ``"Class.method"``, the endpoint,
  ``is_async`` (``None``: detected from the function), ``returns`` (the :data:`Kind` the method
  returns, ``None``: the endpoint's ``kind()`` decides per result). Targets the installed SDK lacks
  are skipped, so one list serves every supported SDK version.
- **Usage readers** are pure functions of SDK objects (or the JSON dicts of a raw body) returning a
  normalised :class:`~aerostack_meter.Usage` or ``None`` (no usage, or usage that cannot be
  trusted: counted as ``usage_missing``, never billed). Read every number through
  :func:`aerostack_meter._usage.to_count` and fields through :func:`read_field`.
  ``response``: a complete response. ``event``: one stream event; the stream's usage is the last
  non-``None`` value (cumulative fields: last value wins, never added up). ``event_chars``: output
  characters in one event, for the estimate of a stream left early (no text is kept).
  ``snapshot``: a stream helper's final snapshot (for ``returns="manager"``).
- **Hooks never need to be defensive about crashing the user's call**: the generic layer guards
  every hook it calls (prepare, kind, usage readers, stream observers, snapshots) once; an
  exception there is counted in ``stats().internal_errors``, logged once, and the user's call or
  stream goes on untouched (a stream whose observer failed is estimated at its end).

An :class:`~aerostack_meter._call.Endpoint` subclass is for what readers cannot say (OpenAI's
``include_usage`` injection and its hidden usage chunk, Anthropic's ``message_start`` /
``message_delta`` counts); most providers need only :class:`ReaderEndpoint`.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MemberDescriptorType
from typing import Any

from .._call import Endpoint, Kind, Reducer
from .._log import log_once
from .._usage import Usage
from .._wrapping import PatchSet, Target, make_routed_wrapper, make_wrapper

__all__ = [
    "Provider",
    "ReaderEndpoint",
    "ReaderReducer",
    "Target",
    "fields_of",
    "in_range",
    "metered_method",
    "method_target",
    "read_field",
]

UsageReader = Callable[[Any], "Usage | None"]


@dataclass
class Provider:
    """One provider, declared as data (see the module docstring)."""

    name: str
    targets: Callable[[], Sequence[Target]]
    client_tree: dict[str, Any] = field(default_factory=dict)
    package: str = ""  # the SDK's import name; defaults to ``name``
    distribution: str = ""  # the SDK's distribution name; defaults to ``package``
    versions: str = ""  # the tested version range, e.g. ">=1.40,<4"; empty: any
    #: an SDK whose HTTP calls all pass through one base client (Stainless: openai, anthropic):
    #: metered there, keyed by endpoint path (see ``_stainless.py``); ``targets`` then need only
    #: what the HTTP layer cannot see (e.g. stream helpers' ``close()``)
    base_client: Any = None

    def __post_init__(self) -> None:
        self.package = self.package or self.name
        self.distribution = self.distribution or self.package
        self._patches = PatchSet(self.name, self.targets)

    def owns(self, module: str) -> bool:
        """Whether a class defined in ``module`` belongs to this provider's SDK."""
        return module == self.package or module.startswith(self.package + ".")

    def patch(self) -> int:
        self._check_version()
        n = self._patches.patch()
        if self.base_client is not None:
            self.base_client.enable()
        return n

    def unpatch(self) -> None:
        if self.base_client is not None:
            self.base_client.disable()
        self._patches.unpatch()

    def all_targets(self) -> list[Target]:
        """Every method patched: the declared targets and the base client's."""
        out = list(self.targets())
        if self.base_client is not None:
            out += self.base_client.targets()
        return out

    def wrapper_factory(self) -> Callable[..., Any]:
        """How ``wrap()`` meters a leaf of ``client_tree``: at the method, or (with a base client)
        by routing the call to the HTTP layer with the proxy's meter and defaults."""
        if self.base_client is None:
            return _declared_wrapper
        base = self.base_client
        base.install()
        # uninstrument() removed the hooks since: a wrapped client keeps working
        return functools.partial(make_routed_wrapper, hooks=base.hooks)

    @property
    def patched(self) -> bool:
        return self._patches.patched

    def _check_version(self) -> None:
        if not self.versions:
            return
        try:
            version = importlib.metadata.version(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            return
        ok = in_range(version, self.versions)
        if ok is False:
            log_once(f"version:{self.name}:{version}", logging.WARNING,
                     "aerostack_meter: %s %s is outside the tested range %s; metering it anyway "
                     "(surfaces are detected at run time)", self.distribution, version, self.versions)


def _declared_wrapper(endpoint: Endpoint, is_async: bool, get_meter: Callable[[], Any],
                      defaults: Any = None) -> Callable[..., Any]:
    """``wrap()``'s :func:`make_wrapper`, told what the endpoint's methods return when the endpoint
    says (its ``returns``: no ``kind()`` asked of each result)."""
    return make_wrapper(endpoint, is_async, get_meter, defaults, getattr(endpoint, "returns", None))


def metered_method(original: Callable[..., Any], meter: Callable[..., Any], is_async: bool) -> Callable[..., Any]:
    """A method that meters its call: a plain function in the class in place of ``original``
    (bound like any method), calling ``meter``, a :func:`make_wrapper` wrapper, with the original
    bound to the instance. Not a ``wrapt`` wrapper, which is bound anew on every attribute read and
    re-packs the arguments (~1 µs per call more, measured on the SDKs' per-request methods).
    ``__wrapped__``, name and docstring are the original's; an ``async def`` stays one."""
    from .._wrapping import plain_replacement

    bind = original.__get__
    metered: Callable[..., Any]
    if is_async:
        async def metered(self: Any, *args: Any, **kwargs: Any) -> Any:
            return await meter(bind(self), self, args, kwargs)
    else:
        def metered(self: Any, *args: Any, **kwargs: Any) -> Any:
            return meter(bind(self), self, args, kwargs)
    return plain_replacement(metered, original)


def method_target(module: str, path: str, endpoint: Endpoint, is_async: bool,
                  returns: Kind | None = None) -> Target:
    """A :class:`Target` for a metered method of a class (a plain function, as the SDKs define
    their methods), replaced by :func:`metered_method`."""

    def plain(get_meter: Callable[[], Any], original: Callable[..., Any]) -> Callable[..., Any]:
        return metered_method(original, make_wrapper(endpoint, is_async, get_meter, None, returns), is_async)

    return Target(module, path, endpoint, is_async, returns, plain=plain)


_NUM = re.compile(r"\d+")


def _parts(version: str) -> tuple[int, ...]:
    out = []
    for piece in version.strip().split("."):
        m = _NUM.match(piece)
        if m is None:
            break
        out.append(int(m.group()))
    return tuple(out)


def in_range(version: str, spec: str) -> bool | None:
    """Whether ``version`` satisfies ``spec`` (comma-separated ``>=``, ``>``, ``<=``, ``<``, ``==``,
    ``!=`` clauses on dotted release numbers; pre-release tags are ignored). ``None`` if unreadable."""
    have = _parts(version)
    if not have:
        return None
    for clause in spec.split(","):
        clause = clause.strip()
        m = re.fullmatch(r"(>=|<=|==|!=|>|<)\s*([\d.]+)", clause)
        if m is None:
            return None
        op, want = m.group(1), _parts(m.group(2))
        n = max(len(have), len(want))
        a, b = have + (0,) * (n - len(have)), want + (0,) * (n - len(want))
        ok = {">=": a >= b, ">": a > b, "<=": a <= b, "<": a < b, "==": a == b, "!=": a != b}[op]
        if not ok:
            return False
    return True


# -- endpoints built from readers ---------------------------------------------------------------

_KINDS: dict[type, Kind] = {}


def probe_kind(result: Any) -> Kind:
    """``"stream"`` for an iterator or async iterator, else ``"response"`` (cached per class)."""
    cls = type(result)
    kind = _KINDS.get(cls)
    if kind is None:
        kind = "stream" if hasattr(cls, "__next__") or hasattr(cls, "__anext__") else "response"
        _KINDS[cls] = kind
    return kind


class ReaderReducer(Reducer):
    """A stream folded by an endpoint's readers: the last usage an event carried wins."""

    __slots__ = ("_chars_of", "_usage_of")

    def __init__(self, provider: str, kwargs: Mapping[str, Any], usage_of: UsageReader | None,
                 chars_of: Callable[[Any], int] | None) -> None:
        super().__init__(provider, kwargs)
        self._usage_of = usage_of
        self._chars_of = chars_of

    def observe(self, event: Any) -> bool:
        if self._usage_of is not None:
            usage = self._usage_of(event)
            if usage is not None:
                self.exact = usage  # cumulative: the last value wins
                if usage.model:
                    self.model = usage.model
                if usage.response_id:
                    self.response_id = usage.response_id
        if self._chars_of is not None:
            self.chars += self._chars_of(event)
        return False


class ReaderEndpoint(Endpoint):
    """An endpoint made of usage readers (see the module docstring)."""

    def __init__(self, provider: str, name: str, *, response: UsageReader | None = None,
                 event: UsageReader | None = None, event_chars: Callable[[Any], int] | None = None,
                 snapshot: UsageReader | None = None, returns: Kind | None = None) -> None:
        self.provider = provider
        self.name = name
        #: what every method metered with this endpoint returns (``wrap()`` then asks no ``kind()``
        #: per call); ``None``: ``kind()`` decides per result
        self.returns = returns
        self._response = response
        self._event = event
        self._event_chars = event_chars
        self._snapshot = snapshot
        # Per call, the core asks ``kind()`` (of a method that does not declare what it returns)
        # and ``usage()``: the functions themselves, not methods that call them (a frame fewer each).
        self.kind = probe_kind  # type: ignore[method-assign]
        if response is not None:
            self.usage = response  # type: ignore[method-assign,assignment]

    def kind(self, result: Any) -> Kind:
        return probe_kind(result)

    def usage(self, response: Any) -> Usage | None:
        return self._response(response) if self._response is not None else None

    def reducer(self, kwargs: Mapping[str, Any], hint: Any) -> Reducer:
        return ReaderReducer(self.provider, kwargs, self._event, self._event_chars)

    def snapshot_usage(self, stream: Any, reducer: Reducer) -> Usage | None:
        return self._snapshot(stream) if self._snapshot is not None else None


_MISSING = object()


def read_field(obj: Any, name: str) -> Any:
    """``obj.name`` for an SDK model or ``obj[name]`` for a JSON dict; ``None`` when absent.

    Fast on pydantic models: a declared field is read from ``__dict__`` and an undeclared one from
    ``__pydantic_extra__``; a plain ``getattr`` of a missing name would go through pydantic's
    ``__getattr__``, which raises internally and costs microseconds per probe.
    """
    if obj is None:
        return None
    if obj.__class__ is dict:
        return obj.get(name)
    d = getattr(obj, "__dict__", None)
    if d is not None:
        value = d.get(name, _MISSING)
        if value is not _MISSING:
            return value
        try:
            extra = object.__getattribute__(obj, "__pydantic_extra__")
        except AttributeError:
            pass
        else:  # a pydantic v2 model: declared fields are in __dict__, the rest in extra
            return extra.get(name) if extra else None
    return getattr(obj, name, None)


def _no_fields(name: str) -> None:
    return None


_PYDANTIC_V2: dict[type, bool] = {}  # class -> whether its instances keep extras in __pydantic_extra__


def fields_of(obj: Any) -> Callable[[str], Any]:
    """A reader of several fields of one object: ``fields_of(obj)(name) == read_field(obj, name)``.

    For a dict or a pydantic v2 model it is a dict's own ``get`` (no Python frame per field): a
    reader reading five fields of a usage object pays one lookup of the model's storage, not five.
    """
    if obj is None:
        return _no_fields
    cls = obj.__class__
    if cls is dict:
        return obj.get  # type: ignore[no-any-return]
    v2 = _PYDANTIC_V2.get(cls)
    if v2 is None:
        v2 = _PYDANTIC_V2[cls] = (isinstance(getattr(cls, "__pydantic_extra__", None), MemberDescriptorType)
                                  and hasattr(obj, "__dict__"))
    if v2:
        try:
            extra = obj.__pydantic_extra__
        except AttributeError:  # the slot is unset: read field by field
            return functools.partial(read_field, obj)
        # declared fields win over extras of the same name, as in read_field
        return obj.__dict__.get if not extra else {**extra, **obj.__dict__}.get
    return functools.partial(read_field, obj)
