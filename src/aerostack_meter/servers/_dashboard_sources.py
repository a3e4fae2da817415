"""Where the dashboard's numbers come from: a usage source (ledger file or gateway emulator) and
the delivery-health sources beside it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Protocol

import httpx

from .._health import DeliveryHealth, HealthSource, LedgerHealth
from .._usage_query import VIEWS, UsageStore, usage_view
from ._gateway_client import _root

__all__ = ["GatewayUsage", "LedgerUsage", "SourceError", "UsageSource"]


class SourceError(Exception):
    """The usage source could not answer (unreachable emulator, unreadable file)."""


class UsageSource(Protocol):
    """Serves `usage_view`'s views; `health()` is the source's own delivery-health source."""

    name: str

    def view(self, view: str, params: Mapping[str, str]) -> dict[str, Any]:
        """A view's JSON. ValueError for bad parameters, SourceError when unreachable."""
        ...

    def health(self) -> HealthSource: ...

    def close(self) -> None: ...


class LedgerUsage:
    """A ledger file (or an emulator's database file), aggregated in-process by `UsageStore`."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.path.abspath(path)
        self.name = f"ledger {os.fspath(path)}"
        self.store = UsageStore.open(self.path)

    def view(self, view: str, params: Mapping[str, str]) -> dict[str, Any]:
        return usage_view(self.store, view, params)

    def health(self) -> HealthSource:
        return LedgerHealth(self.store.last_delivery, name="ledger")

    def close(self) -> None:
        self.store.close()


class GatewayUsage:
    """A running gateway emulator: the same views from its `/_emulator/usage/<view>`."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self.root = _root(url)
        self.name = f"gateway {self.root}"
        self._http = httpx.Client(base_url=self.root, timeout=timeout)

    def view(self, view: str, params: Mapping[str, str]) -> dict[str, Any]:
        if view not in VIEWS:
            raise ValueError(f"unknown view {view!r}: expected one of {', '.join(VIEWS)}")
        try:
            response = self._http.get(f"/_emulator/usage/{view}", params=dict(params))
        except httpx.HTTPError as exc:
            raise SourceError(f"gateway {self.root}: {exc}") from exc
        if response.status_code == 400:
            raise ValueError(response.json().get("message", "bad request"))
        if response.status_code != 200:
            raise SourceError(f"gateway {self.root}: HTTP {response.status_code}")
        body: dict[str, Any] = response.json()
        return body

    def health(self) -> HealthSource:
        return _GatewayHealth(self)

    def close(self) -> None:
        self._http.close()


class _GatewayHealth:
    def __init__(self, source: GatewayUsage) -> None:
        self._source = source
        self.name = "gateway"

    def read(self) -> DeliveryHealth:
        try:
            last = self._source.view("options", {}).get("last_delivery")
        except (SourceError, ValueError) as exc:
            return DeliveryHealth(source=self.name, error=str(exc))
        return DeliveryHealth(source=self.name, last_success=last)
