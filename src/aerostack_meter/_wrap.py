"""``wrap(client)``: meter one client instance through a transparent proxy, without patching.

The proxy forwards every attribute; the resource paths a provider lists (``chat.completions``,
``messages``, their ``with_raw_response`` variants, ...) come back as proxies whose listed methods
are metered. ``isinstance`` checks and static types are kept (``wrap`` returns the client's type).
A listed resource's proxy is made on its first read and kept: a resource assigned through the proxy
replaces it; one replaced on the client behind the proxy is not seen (its methods are: a method
replaced on a resource or its class gets a new wrapper on its next read).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import operator
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


_NOTHING = object()
_CACHED = "_self_c_"  # + a listed name: the proxy's cached child (a resource's proxy, a bound helper)


class _Proxy(wrapt.ObjectProxy):  # type: ignore[type-arg]
    # Every attribute read on a Python subclass of wrapt's proxy would otherwise go through
    # wrapt's C ``__getattribute__`` called as a method (CPython makes and calls a method-wrapper
    # per read when a class defines both hooks: ~1 k instructions). ``object``'s is the lookup
    # wrapt's begins with; a name it does not find reaches ``__getattr__`` below, as wrapt's
    # reached its own. The two names wrapt's intercepts, ``__doc__`` and ``__module__``, are
    # forwarding properties on each node's class (see _proxy).
    __getattribute__ = object.__getattribute__

    def __init__(self, wrapped: Any, node: Node, root: Node, get_meter: Any, defaults: Defaults,
                 factory: Any = make_wrapper) -> None:
        super().__init__(wrapped)
        self._self_factory = factory  # how a leaf is metered (the provider's wrapper_factory())
        self._self_node = node
        self._self_root = root
        self._self_get_meter = get_meter
        self._self_defaults = defaults
        self._self_cache: dict[str, tuple[Any, Any, Any]] = {}  # a listed method's name -> see _leaf

    def __getattr__(self, name: str) -> Any:
        """A name the node's class does not answer (yet): a listed resource or helper is made and
        kept (``_self_c_<name>``, which the class's property for the name reads); any other
        name is the wrapped object's, and the class learns a forwarding property for it, so the
        next read (by the user, or by an SDK method running with the proxy as ``self``) finds
        it without the failed lookup that reaching here costs (an ``AttributeError`` built and
        dropped: ~4 k instructions)."""
        if name.startswith("_self_"):
            if name.startswith(_CACHED):  # not made yet: never the wrapped object's
                raise AttributeError(name)
            return getattr(self.__wrapped__, name)
        spec = self._self_node.get(name)
        if spec is not None and not _is_leaf(spec):
            out = _child(self, name, spec)
            setattr(self, _CACHED + name, out)
            return out
        value = getattr(self.__wrapped__, name)
        cls = type(self)
        if name[:2] != "__" and name.isidentifier() and not hasattr(cls, name):
            setattr(cls, name, _forwarding(name))
        return value

    def __wrapped_setattr_fixups__(self) -> None:
        """``proxy.__wrapped__`` was replaced (wrapt 2 calls this): forget what was made for the
        object before."""
        self._self_cache.clear()
        for name in self._self_node:
            _forget(self, _CACHED + name)

    def __repr__(self) -> str:
        return repr(self.__wrapped__)


def _is_leaf(spec: Any) -> bool:
    """A listed method whose wrapper is checked against the wrapped object's method on each read
    (an endpoint, or a method returning a client), rather than made once and kept."""
    return isinstance(spec, Endpoint) or spec == CLIENT


def _forget(proxy: _Proxy, key: str) -> None:
    with contextlib.suppress(AttributeError):
        delattr(proxy, key)


def _child(proxy: _Proxy, name: str, spec: Any) -> Any:
    """A listed resource's proxy, or a helper bound to the proxy: made once per proxy."""
    if spec == HELPER:
        return _bind_helper(proxy, name)
    return _proxy(getattr(proxy.__wrapped__, name), spec, proxy._self_root, proxy._self_get_meter,
                  proxy._self_defaults, proxy._self_factory)


def _leaf(proxy: _Proxy, name: str, spec: Any, value: Any) -> Any:
    """The wrapper for ``value``, the wrapped object's method ``name`` now: made and kept until
    the method read there is another one."""
    if isinstance(spec, Endpoint):
        is_async = is_async_callable(value)
        out: Any = wrapt.FunctionWrapper(
            value, proxy._self_factory(spec, is_async, proxy._self_get_meter, proxy._self_defaults))
    else:  # CLIENT
        root, get_meter, defaults = proxy._self_root, proxy._self_get_meter, proxy._self_defaults
        factory = proxy._self_factory

        def rewrap(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            return _proxy(wrapped(*args, **kwargs), root, root, get_meter, defaults, factory)

        out = wrapt.FunctionWrapper(value, rewrap)
    # (the bound method, or None; any other value, or _NOTHING; the wrapper): see _listed
    proxy._self_cache[name] = (value, _NOTHING, out) if type(value) is MethodType else (None, value, out)
    return out


def _setter(name: str, forget: str | None = None) -> tuple[Callable[[Any, Any], None], Callable[[Any], None]]:
    """Setting or deleting a name on the proxy acts on the wrapped object (as for any name)."""

    def fset(proxy: Any, value: Any) -> None:
        setattr(proxy.__wrapped__, name, value)
        if forget is not None:
            _forget(proxy, forget)

    def fdel(proxy: Any) -> None:
        delattr(proxy.__wrapped__, name)
        if forget is not None:
            _forget(proxy, forget)

    return fset, fdel


def _listed(name: str, spec: Any) -> property:
    """The property for a name the provider's tree lists. A resource or helper: its kept child,
    read in C (``operator.attrgetter``; the first read reaches ``__getattr__``, which makes it).
    A method: the wrapper made for the method the wrapped object has now: a method replaced
    there (on the instance or its class) gets a new wrapper; a method read from a resource is
    a new bound method on every read, so what it binds is compared."""
    if not _is_leaf(spec):
        key = _CACHED + name
        return property(operator.attrgetter(key), *_setter(name, key))

    def get(proxy: Any) -> Any:
        value = getattr(proxy.__wrapped__, name)
        hit = proxy._self_cache.get(name)
        # two bound methods are == when they bind the same function to the same instance
        if hit is not None and (hit[0] == value if type(value) is MethodType else hit[1] is value):
            return hit[2]
        return _leaf(proxy, name, spec, value)

    return property(get, *_setter(name))


@functools.cache
def _forwarding(name: str) -> property:
    """A property reading (setting, deleting) ``name`` on the wrapped object, in C."""
    return property(operator.attrgetter("__wrapped__." + name), *_setter(name))


_FORWARDED = {  # what wrapt's own __getattribute__ answered from the wrapped object
    "__doc__": property(operator.attrgetter("__wrapped__.__doc__"), *_setter("__doc__")),
    "__module__": property(operator.attrgetter("__wrapped__.__module__"), *_setter("__module__")),
}

_classes: dict[int, tuple[Node, type[_Proxy]]] = {}  # id(node) -> (node, its proxy class)


def _proxy(wrapped: Any, node: Node, root: Node, get_meter: Any, defaults: Defaults,
           factory: Any = make_wrapper) -> _Proxy:
    """A proxy for ``wrapped`` at ``node`` of the tree: an instance of the node's own ``_Proxy``
    subclass, whose listed names are properties (see :func:`_listed`; made once per node)."""
    entry = _classes.get(id(node))
    if entry is None or entry[0] is not node:
        names = {n: _listed(n, spec) for n, spec in node.items()
                 if isinstance(n, str) and not hasattr(_Proxy, n)}
        entry = _classes[id(node)] = (node, type("_Proxy", (_Proxy,), {**_FORWARDED, **names}))
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
