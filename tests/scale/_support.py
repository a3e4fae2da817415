"""Helpers for the Redis tests: relays in this process against the gateway emulator."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from aerostack_meter._config import build_settings
from aerostack_meter.relay import Relay, RelayOptions, StreamConfig

KEY = "ac_secret_scale_key_DO_NOT_LEAK"
API_ID = "api_scale"
STREAM = "aerostack:usage"


def make_relay(url: str, gateway_url: str, name: str, **options: Any) -> Relay:
    settings = build_settings(KEY, base_url=gateway_url, backoff_base=0.02, max_backoff=0.2,
                              environ={})
    options.setdefault("block", 0.05)
    return Relay(StreamConfig.from_url(url), settings, RelayOptions(name=name, **options))


def run_until(relay: Relay, done: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"relay did not finish: {dict(relay.counters)}"
        relay.run_once()


def append(client: Any, records: list[tuple[str, str, int]], *, stream: str = STREAM,
           api: str = API_ID, metric: str = "tokens") -> None:
    """Append records (record id, consumer, units) as the Redis sink would."""
    for rid, consumer, units in records:
        client.xadd(stream, {"r": rid, "c": consumer, "a": api, "m": metric, "u": str(units),
                             "n": "1", "e": "0"})


def undelivered(client: Any, stream: str = STREAM, group: str = "aerostack-relay") -> int:
    g = next(g for g in client.xinfo_groups(stream) if g["name"] == group)
    return int(g["pending"]) + int(g["lag"] or 0)


def gateway_totals(gw: Any) -> dict[str, int]:
    return dict(gw.client.totals_by_consumer())


def key_excess(gw: Any) -> dict[str, int]:
    """Units logged more than once under the same Idempotency-Key, per consumer."""
    by_key: dict[str, list[dict[str, Any]]] = {}
    for row in gw.client.log():
        if row["idempotencyKey"]:
            by_key.setdefault(row["idempotencyKey"], []).append(row)
    out: Counter[str] = Counter()
    for rows in by_key.values():
        if len(rows) > 1:
            out[rows[0]["consumerId"]] += int(rows[0]["units"]) * (len(rows) - 1)
    return dict(out)
