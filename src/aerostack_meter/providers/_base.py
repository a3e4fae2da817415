"""What a provider module exports: its patch set and the resource tree ``wrap()`` proxies."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._wrapping import PatchSet, Target

__all__ = ["Provider"]


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
