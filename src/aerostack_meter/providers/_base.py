"""What a provider module exports: its patch set and the resource tree ``wrap()`` proxies."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._wrapping import PatchSet, Target

__all__ = ["Provider", "read_field"]


@dataclass
class Provider:
    name: str
    targets: Callable[[], Sequence[Target]]
    client_tree: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._patches = PatchSet(self.name, self.targets)

    def patch(self) -> int:
        return self._patches.patch()

    def unpatch(self) -> None:
        self._patches.unpatch()

    @property
    def patched(self) -> bool:
        return self._patches.patched


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
