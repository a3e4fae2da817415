"""Usage totals per consumer, API and metric, from a local ledger or a gateway, as a text table.

Core: it needs only sqlite3 and httpx, so `aerostack-meter report` works on the core install.

`format_totals(rows)` is shared with the demo; it accepts `TotalRow`s or mappings in the
gateway's shape (`consumerId`, `apiId`, `metric`, `units`, `requests`) or the ledger's
(`consumer_id`, `api_id`, `metric`, `units`, `events`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from ._config import DEFAULT_LEDGER
from ._usage_query import UsageStore

__all__ = [
    "DEFAULT_LEDGER",
    "TotalRow",
    "default_ledger_path",
    "format_totals",
    "gateway_totals",
    "ledger_totals",
]

_HEADERS = ("CONSUMER", "API", "METRIC", "UNITS", "EVENTS")


@dataclass(frozen=True)
class TotalRow:
    consumer_id: str
    api_id: str
    metric: str
    units: int
    events: int


def default_ledger_path() -> str:
    return os.environ.get("AEROSTACK_METER_LEDGER") or os.path.join(".", DEFAULT_LEDGER)


def ledger_totals(path: str | os.PathLike[str]) -> list[TotalRow]:
    """Totals from the core library's ledger file, opened read-only (the dashboard's SQL)."""
    store = UsageStore.open(path, write=False)
    try:
        rows = store.totals()
    finally:
        store.close()
    return [TotalRow(r["consumer_id"], r["api_id"], r["metric"], r["units"], r["events"])
            for r in rows]


def gateway_totals(url: str, *, timeout: float = 10.0) -> list[TotalRow]:
    """Totals from a running gateway emulator's ``/_emulator/totals`` (``url``: its API base
    ``.../v1`` or its root). Raises ``httpx.HTTPError`` when it cannot be read."""
    root = url.rstrip("/").removesuffix("/v1")
    response = httpx.get(f"{root}/_emulator/totals", timeout=timeout)
    response.raise_for_status()
    return [_to_row(row) for row in response.json()["rows"]]


def _pick(row: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if name in row:
            return row[name]
    raise KeyError(names[0])


def _to_row(row: TotalRow | Mapping[str, Any], counts: tuple[str, str] = ("events", "requests")) -> TotalRow:
    if isinstance(row, TotalRow):
        return row
    return TotalRow(
        consumer_id=str(_pick(row, "consumer_id", "consumerId", "consumer")),
        api_id=str(_pick(row, "api_id", "apiId", "api")),
        metric=str(_pick(row, "metric")),
        units=int(_pick(row, "units")),
        events=int(_pick(row, *counts)) if any(c in row for c in counts) else 0,
    )


def format_totals(rows: Iterable[TotalRow | Mapping[str, Any]], *, title: str | None = None,
                  requests: bool = False) -> str:
    """An aligned text table, one line per (consumer, API, metric), and a TOTAL line. The last
    column counts usage events (a ledger's), or with ``requests`` billing requests (what a
    gateway knows: one per ``POST /gateway/billing/log``, however many events it coalesced)."""
    counts = ("requests", "events") if requests else ("events", "requests")
    headers = (*_HEADERS[:4], "REQUESTS") if requests else _HEADERS
    items = sorted((_to_row(r, counts) for r in rows), key=lambda r: (r.consumer_id, r.api_id, r.metric))
    lines = [title] if title else []
    if not items:
        lines.append("(no usage recorded)")
        return "\n".join(lines) + "\n"
    body = [(r.consumer_id, r.api_id, r.metric, str(r.units), str(r.events)) for r in items]
    total = ("TOTAL", "", "", str(sum(r.units for r in items)), str(sum(r.events for r in items)))
    widths = [max(len(row[i]) for row in [headers, *body, total]) for i in range(len(headers))]

    def fmt(cells: tuple[str, ...]) -> str:
        left = [cells[i].ljust(widths[i]) for i in range(3)]
        right = [cells[i].rjust(widths[i]) for i in range(3, 5)]
        return "  ".join(left + right).rstrip()

    rule = "  ".join("-" * w for w in widths)
    lines += [fmt(headers), rule, *(fmt(row) for row in body), rule, fmt(total)]
    return "\n".join(lines) + "\n"
