"""The API key holder: its repr, str and format never show it, and it cannot be pickled."""

from __future__ import annotations

from typing import Any

__all__ = ["Secret"]


class Secret:
    """Holds the API key; its repr, str and format never show it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> Any:  # never pickle the key into a traceback or a spool
        raise TypeError("aerostack_meter.Secret cannot be pickled")
