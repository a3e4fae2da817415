"""The API key: its check, and its holder (repr, str and format never show it; never pickled)."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

__all__ = ["Secret", "header_key"]


def header_key(key: Any, call: str | None = None) -> str:
    """The key as sent in ``X-Aerostack-Key``: surrounding whitespace removed (a key read from a
    secret file or an env file often ends in a newline), and nothing an HTTP header cannot carry
    (visible ASCII only). Raises :class:`~aerostack_meter.ConfigError` naming ``api_key``, never
    quoting the key."""
    from ._errors import ConfigError

    if not isinstance(key, str) or not key.strip():
        raise ConfigError("api_key", "must be a non-empty string", call=call)
    stripped: str = key.strip()
    if not all("!" <= ch <= "~" for ch in stripped):
        raise ConfigError("api_key", "contains a character an HTTP header cannot carry (a space, a "
                                     "control character or non-ASCII): check where the key is read "
                                     "from", call=call)
    return stripped

_FINGERPRINT_LABEL = b"aerostack-meter key fingerprint v1"


class Secret:
    """Holds the API key; its repr, str and format never show it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def fingerprint(self) -> str:
        """16 hex digits that name this key without revealing it: HMAC-SHA256 keyed with the key
        over a fixed label, truncated (one-way; equal keys give equal fingerprints). It names the
        state sub-directory of usage journaled under this key (see ``_paths``)."""
        mac = hmac.new(self._value.encode("utf-8", "surrogatepass"), _FINGERPRINT_LABEL, hashlib.sha256)
        return mac.hexdigest()[:16]

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
