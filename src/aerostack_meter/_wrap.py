"""``wrap(client)``: meter one client instance through a transparent proxy, without patching.

The proxy forwards every attribute; the resource paths a provider lists (``chat.completions``,
``messages``, their ``with_raw_response`` variants, ...) come back as proxies whose listed methods
are metered. ``isinstance`` checks and static types are kept (``wrap`` returns the client's type).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from types import MethodType
from typing import Any, TypeVar

import wrapt

from ._budget import Budget, check_budget
from ._call import Endpoint
from ._context import _check_id
from ._errors import ConfigError
from ._meter import Defaults, Meter
from ._usage import MetricPolicy, check_policy
from ._wrapping import is_async_callable, make_wrapper

__all__ = ["CLIENT", "HELPER", "wrap"]

T = TypeVar("T")

CLIENT = "__client__"  # a node value: the attribute is a method returning a client (with_options, copy)
# A node value: an SDK helper (method or property) whose own code reaches sibling methods through
# ``self`` (a ``stream()`` helper calling ``create()``, ``with_raw_response`` wrapping ``create``).
# It is evaluated with the proxy as ``self``, so those inner calls go through the proxy and are metered.
HELPER = "__helper__"

Node = Mapping[str, Any]  # name -> Endpoint | Node | CLIENT


class _Proxy(wrapt.ObjectProxy):  # type: ignore[type-arg]
    def __init__(self, wrapped: Any, node: Node, root: Node, get_meter: Any, defaults: Defaults,
                 factory: Any = make_wrapper) -> None:
        super().__init__(wrapped)
        self._self_factory = factory  # how a leaf is metered (the provider's wrapper_factory())
        self._self_node = node
        self._self_root = root
        self._self_get_meter = get_meter
        self._self_defaults = defaults
        self._self_cache: dict[str, tuple[Any, Any, Any]] = {}  # name -> (function, instance, wrapper)
        self._self_helpers: dict[str, Any] = {}

    # Names the tree lists are _Listed descriptors on the node's subclass (see _proxy); any other
    # name is wrapt's: forwarded to the wrapped object.

    def __repr__(self) -> str:
        return repr(self.__wrapped__)


def _attr(proxy: _Proxy, name: str) -> Any:
    """``proxy.name``: the wrapped object's attribute, metered where the provider's tree says."""
    spec = proxy._self_node.get(name)
    if spec == HELPER:
        bound = proxy._self_helpers.get(name)
        if bound is None:
            bound = proxy._self_helpers[name] = _bind_helper(proxy, name)
        return bound
    value = getattr(proxy.__wrapped__, name)
    if spec is None:
        return value
    # A method comes back as a new bound method on every getattr: compare what it binds (the
    # function and the instance), not the bound method itself, or the cache never hits.
    key = (value.__func__, value.__self__) if type(value) is MethodType else (value, None)
    hit = proxy._self_cache.get(name)
    if hit is not None and hit[0] is key[0] and hit[1] is key[1]:
        return hit[2]
    if isinstance(spec, Endpoint):
        is_async = is_async_callable(value)
        out: Any = wrapt.FunctionWrapper(
            value, proxy._self_factory(spec, is_async, proxy._self_get_meter, proxy._self_defaults))
    elif spec == CLIENT:
        root, get_meter, defaults = proxy._self_root, proxy._self_get_meter, proxy._self_defaults
        factory = proxy._self_factory

        def rewrap(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            return _proxy(wrapped(*args, **kwargs), root, root, get_meter, defaults, factory)

        out = wrapt.FunctionWrapper(value, rewrap)
    else:
        out = _proxy(value, spec, proxy._self_root, proxy._self_get_meter, proxy._self_defaults,
                     proxy._self_factory)
    proxy._self_cache[name] = (*key, out)
    return out


class _Listed:
    """A name the provider's tree lists, as a data descriptor on the proxy's class: read without the
    failed ordinary lookup that reaching ``__getattr__`` costs (an ``AttributeError`` built and
    dropped: most of the cost of ``client.messages.create`` through a proxy). Setting or deleting
    it acts on the wrapped object, as for any other name."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, proxy: Any, owner: Any = None) -> Any:
        if proxy is None:
            return self
        name = self.name
        hit = proxy._self_cache.get(name)
        if hit is not None:  # the wrapper made for what the wrapped object has now: reused
            value = getattr(proxy.__wrapped__, name)
            if type(value) is MethodType:
                if value.__func__ is hit[0] and value.__self__ is hit[1]:
                    return hit[2]
            elif value is hit[0] and hit[1] is None:
                return hit[2]
        return _attr(proxy, name)

    def __set__(self, proxy: Any, value: Any) -> None:
        setattr(proxy.__wrapped__, self.name, value)

    def __delete__(self, proxy: Any) -> None:
        delattr(proxy.__wrapped__, self.name)


_classes: dict[int, tuple[Node, type[_Proxy]]] = {}  # id(node) -> (node, its proxy class)


def _proxy(wrapped: Any, node: Node, root: Node, get_meter: Any, defaults: Defaults,
           factory: Any = make_wrapper) -> _Proxy:
    """A proxy for ``wrapped`` at ``node`` of the tree: an instance of the node's own ``_Proxy``
    subclass, whose listed names are :class:`_Listed` descriptors (made once per node)."""
    entry = _classes.get(id(node))
    if entry is None or entry[0] is not node:
        names = {n: _Listed(n) for n in node if isinstance(n, str) and not hasattr(_Proxy, n)}
        entry = _classes[id(node)] = (node, type("_Proxy", (_Proxy,), names))
    return entry[1](wrapped, node, root, get_meter, defaults, factory)


def _bind_helper(proxy: _Proxy, name: str) -> Any:
    cls = type(proxy.__wrapped__)
    attr = inspect.getattr_static(cls, name)
    if isinstance(attr, functools.cached_property):  # never via __get__: it would cache on the real object
        return attr.func(proxy)
    if isinstance(attr, property):
        return attr.fget(proxy)  # type: ignore[misc]
    return attr.__get__(proxy, cls)


def _tree_for(client: Any) -> tuple[Node, Any]:
    """The provider's ``wrap()`` tree and how its leaves are metered."""
    from .providers import names, provider_for

    provider = provider_for(type(client))
    if provider is None:
        raise ConfigError("client", f"unsupported client type {type(client).__name__}; expected a "
                          f"client of one of: {', '.join(names())}", call="wrap")
    return provider.client_tree, provider.wrapper_factory()


def wrap(client: T, *, consumer_id: str | None = None, api_id: str | None = None,
         metrics: MetricPolicy | None = None, meter: Meter | None = None,
         budget: Budget | Callable[[str], int | None] | None = None) -> T:
    """Meter this one client (and nothing else), billing to these defaults unless a
    ``consumer()`` scope says otherwise. Uses the process-wide meter unless ``meter`` is given.
    ``budget`` (a :class:`Budget`, or a callable ``consumer_id -> remaining``) is checked before
    each call of this client instead of ``init(budget=...)`` (docs/budgets.md)."""
    checked_budget = check_budget(budget)
    _check_id("consumer_id", consumer_id, optional=True, call="wrap")
    _check_id("api_id", api_id, optional=True, call="wrap")
    if metrics is not None:
        check_policy(metrics, call="wrap")
    if isinstance(client, _Proxy):
        client = client.__wrapped__
    tree, factory = _tree_for(client)
    if meter is not None:
        explicit = meter

        def get_meter() -> Meter | None:
            return explicit
    else:
        from ._global import _ensure

        _ensure()
        from ._global import get_meter
    return _proxy(client, tree, tree, get_meter,  # type: ignore[return-value]
                  Defaults(consumer_id, api_id, metrics, checked_budget), factory)
