"""Delivery health for the dashboard: what is waiting on disk, lost, dead-lettered or ambiguous.

A *health source* is anything with a `name` and a `read()` returning a `DeliveryHealth`: the
dashboard reads every configured source on each refresh and shows them side by side and summed.
Another backend (the durable state directory's journal, a Redis relay's counters) plugs in by
implementing `HealthSource`; a field a source cannot know stays None ("not reported"), which is
not the same as 0.

Sources here: `SpoolHealth` (one SQLite spool file, read-only), `StateDirHealth` (every spool file
in a directory), `LedgerHealth` (the ledger's last delivery) and `StaticHealth` (fixed numbers, for
callers that already have them).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "DeliveryHealth",
    "HealthSource",
    "LedgerHealth",
    "SpoolHealth",
    "StateDirHealth",
    "StaticHealth",
    "combine",
]

_COUNTS = ("backlog_records", "backlog_units", "backlog_bytes", "dropped", "dead_lettered",
           "ambiguous_retries")


@dataclass(frozen=True)
class DeliveryHealth:
    """One source's view of delivery. Counts are records (usage rows), `backlog_units` their
    units, `backlog_bytes` the on-disk size; `last_success` is Unix seconds. None = not reported.
    `error` says why a source could not be read (the other fields are then None)."""

    source: str
    backlog_records: int | None = None
    backlog_units: int | None = None
    backlog_bytes: int | None = None
    dropped: int | None = None
    dead_lettered: int | None = None
    ambiguous_retries: int | None = None
    last_success: float | None = None
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@runtime_checkable
class HealthSource(Protocol):
    """Something the dashboard can ask for delivery health. `read()` must not raise for an
    unreadable backend: it returns a `DeliveryHealth` with `error` set."""

    name: str

    def read(self) -> DeliveryHealth: ...


def combine(healths: Iterable[DeliveryHealth]) -> DeliveryHealth:
    """The sum of every reported count and the latest `last_success` (None where no source
    reported the field)."""
    items = [h for h in healths if h.error is None]
    totals: dict[str, Any] = {}
    for name in _COUNTS:
        values = [getattr(h, name) for h in items if getattr(h, name) is not None]
        totals[name] = sum(values) if values else None
    times = [h.last_success for h in items if h.last_success is not None]
    return DeliveryHealth(source="all", last_success=max(times) if times else None, **totals)


def _read_only(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=2.0)


def _guard(name: str, read: Callable[[], DeliveryHealth]) -> DeliveryHealth:
    try:
        return read()
    except (OSError, sqlite3.Error, ValueError) as exc:
        return DeliveryHealth(source=name, error=f"{type(exc).__name__}: {exc}")


def _file_bytes(path: Path) -> int:
    total = 0
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(OSError):
            total += os.path.getsize(f"{path}{suffix}")
    return total


class SpoolHealth:
    """The SQLite spool (`spool_path=` / `AEROSTACK_METER_SPOOL`): rows not yet delivered
    (recorded events plus formed requests), their units, the file size, and the ambiguous
    retries still pending (adopted requests that may have been delivered already)."""

    def __init__(self, path: str | os.PathLike[str], name: str | None = None) -> None:
        self.path = Path(path)
        self.name = name or f"spool {self.path.name}"

    def read(self) -> DeliveryHealth:
        return _guard(self.name, self._read)

    def _read(self) -> DeliveryHealth:
        if not self.path.is_file():
            raise FileNotFoundError(f"no spool at {self.path}")
        conn = _read_only(self.path)
        try:
            events, event_units = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(units), 0) FROM events").fetchone()
            batches, batch_events, batch_units, ambiguous = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(n_events), 0), COALESCE(SUM(units), 0),"
                " COALESCE(SUM(ambiguous), 0) FROM batches").fetchone()
        finally:
            conn.close()
        return DeliveryHealth(
            source=self.name,
            backlog_records=int(events) + int(batch_events),
            backlog_units=int(event_units) + int(batch_units),
            backlog_bytes=_file_bytes(self.path),
            ambiguous_retries=int(ambiguous),
            details={"path": str(self.path), "pending_requests": int(batches)},
        )


def _is_spool(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            if fh.read(16) != b"SQLite format 3\x00":
                return False
        conn = _read_only(path)
        try:
            names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        finally:
            conn.close()
    except (OSError, sqlite3.Error):
        return False
    return {"events", "batches"} <= names


def _dead_letter_lines(path: Path) -> int:
    try:
        with path.open("rb") as fh:
            return sum(1 for line in fh if line.strip())
    except FileNotFoundError:
        return 0


def _destination_health(directory: Path) -> DeliveryHealth:
    """One destination directory of the durable state directory: its journals
    (`<token>.<n>.journal`: bytes on disk, and the records and units not yet delivered when every
    journal parses cleanly) and its dead letters (`dead-letters.jsonl`, one JSON object per line).
    The journals of live processes are read as they are: a record being delivered right now still
    counts."""
    from ._journal import recover
    from ._journal_format import B_INFLIGHT, parse

    journals = [p for p in directory.glob("*.journal") if p.is_file()]
    journal_bytes = 0
    records: int | None = 0
    units: int | None = 0
    ambiguous = 0
    for path in journals:
        data = path.read_bytes()
        parsed = parse(data, final=True)
        journal_bytes += len(data) - parsed.zero_tail  # (a live journal's pre-allocated end)
        if parsed.bad_bytes or records is None or units is None:
            records = units = None  # not a journal we can read: only its size is known
            continue
        rec = recover(parsed.records)
        records += rec.n_events
        # a call not priced yet (metrics="cost", ``U`` record) counts as a record of no known units
        units += sum(e.units for e in rec.events) + sum(r.units for r in rec.requests)
        ambiguous += sum(1 for r in rec.requests if r.flags & B_INFLIGHT)
    try:
        destination = (directory / "destination").read_text(encoding="utf-8", errors="replace")
    except OSError:
        destination = ""
    return DeliveryHealth(
        source=f"state {directory.name}",
        backlog_records=records,
        backlog_units=units,
        backlog_bytes=journal_bytes,
        ambiguous_retries=ambiguous,
        dead_lettered=_dead_letter_lines(directory / "dead-letters.jsonl"),
        details={"destination": destination, "journals": len(journals)},
    )


class StateDirHealth:
    """A state directory: every SQLite spool file directly in it, and every destination
    sub-directory of the durable journal (one with a `destination` marker), summed; `details`
    lists each part."""

    def __init__(self, directory: str | os.PathLike[str], name: str | None = None) -> None:
        self.directory = Path(directory)
        self.name = name or f"state dir {self.directory}"

    def read(self) -> DeliveryHealth:
        return _guard(self.name, self._read)

    def _read(self) -> DeliveryHealth:
        if not self.directory.is_dir():
            raise FileNotFoundError(f"no state directory at {self.directory}")
        entries = sorted(self.directory.iterdir())
        parts = [SpoolHealth(p).read() for p in entries if p.is_file() and _is_spool(p)]
        parts += [_guard(str(p), functools.partial(_destination_health, p))
                  for p in entries if p.is_dir() and (p / "destination").is_file()]
        if not parts:  # nothing on disk: nothing waiting
            return DeliveryHealth(source=self.name, backlog_records=0, backlog_units=0,
                                  backlog_bytes=0, dead_lettered=0, ambiguous_retries=0,
                                  details={"parts": []})
        total = combine(parts)
        return DeliveryHealth(
            source=self.name,
            backlog_records=total.backlog_records,
            backlog_units=total.backlog_units,
            backlog_bytes=total.backlog_bytes or 0,
            dead_lettered=total.dead_lettered,
            ambiguous_retries=total.ambiguous_retries,
            details={"parts": [p.to_json() for p in parts]},
        )


class LedgerHealth:
    """The local ledger is itself a destination: its last row is the last successful delivery."""

    def __init__(self, last_delivery: Callable[[], float | None], name: str = "ledger") -> None:
        self._last = last_delivery
        self.name = name

    def read(self) -> DeliveryHealth:
        return _guard(self.name, lambda: DeliveryHealth(source=self.name,
                                                        last_success=self._last()))


class StaticHealth:
    """Fixed figures (a caller that already has them, or a test)."""

    def __init__(self, health: DeliveryHealth) -> None:
        self.name = health.source
        self._health = health

    def read(self) -> DeliveryHealth:
        return self._health
