"""The relay's delivery health for the dashboard (a `HealthSource` over `gather`'s snapshot)."""

from __future__ import annotations

from typing import Any

from .._health import DeliveryHealth
from .._stream import StreamConfig, safe_url
from ._stats import gather

__all__ = ["RelayHealth"]


class RelayHealth:
    """A Redis stream and its relays: `backlog_records` = entries not yet delivered (unread plus
    read and unacknowledged), `dead_lettered` = the dead-letter stream's length,
    `ambiguous_retries` = the relays' ambiguous retries and claims, `last_success` = the latest
    batch any relay had accepted. `dropped` is not reported (the stream refuses to trim
    undelivered entries; see docs/scaling.md)."""

    def __init__(self, url: str, name: str | None = None) -> None:
        self.config = StreamConfig.from_url(url)
        self.name = name or f"redis {safe_url(self.config.redis_url)} {self.config.stream}"
        self._client: Any = None

    def read(self) -> DeliveryHealth:
        try:
            if self._client is None:
                self._client = self.config.connect(decode_responses=True)
            snap = gather(self._client, self.config)
        except Exception as exc:  # redis errors of every kind: report, never raise
            return DeliveryHealth(source=self.name, error=f"{type(exc).__name__}: {exc}")
        relays: dict[str, dict[str, Any]] = snap["relays"]
        ambiguous = sum(int(r.get("ambiguous_retries", 0)) + int(r.get("ambiguous_claims", 0))
                        for r in relays.values())
        last = max((float(r.get("last_delivery", 0) or 0) for r in relays.values()), default=0.0)
        return DeliveryHealth(
            source=self.name,
            backlog_records=int(snap["undelivered"]),
            dead_lettered=int(snap["dead_letters"]),
            ambiguous_retries=ambiguous,
            last_success=last or None,
            details={"lag": snap["lag"], "pending": snap["pending"],
                     "oldest_undelivered_s": snap["oldest_undelivered_s"],
                     "ambiguous_units": sum(snap["ambiguous_units"].values()),
                     "relays": sorted(relays)},
        )
