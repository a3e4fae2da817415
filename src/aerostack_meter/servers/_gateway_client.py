"""`GatewayClient`: a plain httpx client for the emulator's read and control endpoints."""

from __future__ import annotations

from types import TracebackType
from typing import Any

import httpx

__all__ = ["GatewayClient"]


def _root(url: str) -> str:
    """Accept either the API base (`.../v1`) or the server root."""
    url = url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


class GatewayClient:
    """Reads totals/log/stats of a running gateway emulator and changes its faults."""

    def __init__(self, url: str, *, timeout: float = 10.0, control_token: str | None = None) -> None:
        self.root = _root(url)
        headers = {"X-Emulator-Token": control_token} if control_token else None
        self._http = httpx.Client(base_url=self.root, timeout=timeout, headers=headers)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _get(self, path: str, **params: Any) -> Any:
        response = self._http.get(path, params={k: v for k, v in params.items() if v is not None})
        response.raise_for_status()
        return response.json()

    def _post(self, path: str, body: Any = None) -> Any:
        response = self._http.post(path, json=body if body is not None else {})
        response.raise_for_status()
        return response.json()

    def health(self) -> bool:
        return bool(self._get("/_emulator/health").get("ok"))

    def totals(self, by: str | None = None) -> list[dict[str, Any]]:
        """Rows `{consumerId, apiId, metric, units, requests}` (only the `by` column if given)."""
        rows: list[dict[str, Any]] = self._get("/_emulator/totals", by=by)["rows"]
        return rows

    def totals_by_consumer(self) -> dict[str, int]:
        """Units per consumer, summed over every API and metric."""
        return {row["consumerId"]: int(row["units"]) for row in self.totals(by="consumer")}

    def log(self, *, limit: int | None = None, after_id: int = 0) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self._get("/_emulator/log", limit=limit, after_id=after_id)[
            "rows"
        ]
        return rows

    def duplicates(self) -> dict[str, int]:
        """Idempotency keys logged more than once, with how many times."""
        rows = self._get("/_emulator/duplicates")["rows"]
        return {row["idempotencyKey"]: int(row["count"]) for row in rows}

    def wallets(self) -> dict[str, int]:
        wallets: dict[str, int] = self._get("/_emulator/wallets")["wallets"]
        return wallets

    def set_wallets(self, wallets: dict[str, int]) -> dict[str, int]:
        result: dict[str, int] = self._post("/_emulator/wallets", wallets)["wallets"]
        return result

    def faults(self) -> dict[str, Any]:
        cfg: dict[str, Any] = self._get("/_emulator/faults")["faults"]
        return cfg

    def set_faults(self, **cfg: Any) -> dict[str, Any]:
        """Replace the whole fault config (settings not given return to their defaults)."""
        result: dict[str, Any] = self._post("/_emulator/faults", cfg)["faults"]
        return result

    def clear_faults(self) -> dict[str, Any]:
        return self.set_faults()

    def reset(self) -> None:
        """Clear the billing log and the stats (wallets and faults are kept)."""
        self._post("/_emulator/reset")

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = self._get("/_emulator/stats")
        return stats
