"""What ``aerostack-meter relay --stats`` and ``/metrics`` show: the stream's lag and each relay's counters."""

from __future__ import annotations

import time
from typing import Any

from .._stream import StreamConfig, undelivered_floor

__all__ = ["format_stats", "gather"]


def gather(client: Any, cfg: StreamConfig) -> dict[str, Any]:
    """A snapshot from Redis (``decode_responses=True`` client):

    ``length`` entries in the stream; ``lag`` entries not read by the group yet; ``pending`` read
    but not acknowledged; ``undelivered`` = lag + pending; ``oldest_undelivered_s`` the age of the
    oldest undelivered entry (from its id's timestamp); ``dead_letters``; ``ambiguous_units`` per
    consumer (units that may have been billed twice); ``consumers`` (name -> pending, idle_s) and
    ``relays`` (name -> published counters).
    """
    out: dict[str, Any] = {"stream": cfg.stream, "group": cfg.group, "maxlen": cfg.maxlen,
                           "length": 0, "lag": 0, "pending": 0, "undelivered": 0,
                           "oldest_undelivered_s": 0.0, "dead_letters": 0, "ambiguous_units": {},
                           "consumers": {}, "relays": {}}
    if not client.exists(cfg.stream):
        return out
    out["length"] = int(client.xlen(cfg.stream))
    group = next((g for g in client.xinfo_groups(cfg.stream) if g["name"] == cfg.group), None)
    if group is not None:
        out["pending"] = int(group["pending"])
        lag = group.get("lag")
        out["lag"] = int(lag) if lag is not None else out["length"]
        out["undelivered"] = out["lag"] + out["pending"]
        for c in client.xinfo_consumers(cfg.stream, cfg.group):
            out["consumers"][c["name"]] = {"pending": int(c["pending"]),
                                           "idle_s": round(int(c["idle"]) / 1000, 1)}
    if out["undelivered"]:
        floor = undelivered_floor(client, cfg)
        first = client.xrange(cfg.stream, min=floor or "-", count=1)
        if first:
            out["oldest_undelivered_s"] = round(max(0.0, time.time() - int(first[0][0].split("-")[0]) / 1000), 1)
    out["dead_letters"] = int(client.xlen(cfg.dead_stream)) if client.exists(cfg.dead_stream) else 0
    out["ambiguous_units"] = {k: int(v) for k, v in client.hgetall(cfg.stream + ":ambiguous").items()}
    prefix = cfg.relay_key("")
    for key in client.scan_iter(match=prefix + "*", count=100):
        fields = client.hgetall(key)
        out["relays"][key[len(prefix):]] = {k: _num(v) for k, v in fields.items()}
    return out


def _num(v: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(v)
        except ValueError:
            pass
    return v


def format_stats(s: dict[str, Any]) -> str:
    lines = [
        f"stream {s['stream']!r} group {s['group']!r}: {s['length']} entries (maxlen {s['maxlen']})",
        f"  undelivered: {s['undelivered']} ({s['lag']} not read, {s['pending']} read and not "
        f"acknowledged); oldest {s['oldest_undelivered_s']} s",
        f"  dead letters: {s['dead_letters']}; units that may be billed twice (ambiguous): "
        f"{sum(s['ambiguous_units'].values())}",
    ]
    for name, r in sorted(s["relays"].items()):
        state = "stopped" if r.get("stopped") else f"seen {max(0.0, time.time() - float(r.get('updated', 0))):.0f} s ago"
        lines.append(
            f"  relay {name} ({state}): {r.get('records_per_s', 0)} records/s, "
            f"{r.get('records_delivered', 0)} records / {r.get('units_delivered', 0)} units delivered, "
            f"held {r.get('held', 0)}, retries {r.get('retries', 0)}, claimed {r.get('entries_claimed', 0)}, "
            f"duplicates skipped {r.get('duplicates_skipped', 0)}, dead-lettered {r.get('records_dead_lettered', 0)}")
    return "\n".join(lines) + "\n"
