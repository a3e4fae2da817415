"""The dead-letter store: requests the billing API refused for good (400, 404, 422, ...).

One JSON object per line in ``dead-letters.jsonl`` of a destination directory (0600)::

    {"consumerId": ..., "apiId": ..., "metric": ..., "units": n, "events": n,
     "idempotencyKey": ..., "reason": "rejected_400", "message": ..., "ts": unix seconds}

Nothing here is deleted unless it was delivered: ``aerostack-meter drain --retry-dead`` resends
the entries and keeps those that are refused again. A line that cannot be read is kept aside in
``dead-letters.jsonl.corrupt-...`` (quarantined) and counted.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

from .sinks import Batch, SendResult

try:
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = ["DeadLetters"]

FILE = "dead-letters.jsonl"


class DeadLetters:
    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, FILE)

    def add(self, batch: Batch, result: SendResult) -> bool:
        """Keep one refused request. False when it cannot be written (then it is counted lost)."""
        line = json.dumps({
            "consumerId": batch.consumer_id, "apiId": batch.api_id, "metric": batch.metric,
            "units": batch.units, "events": batch.n_events, "idempotencyKey": batch.idempotency_key,
            "reason": result.reason, "message": result.message[:500], "ts": round(time.time(), 3),
        }, ensure_ascii=True) + "\n"
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError:
            return False
        try:
            os.write(fd, line.encode())
        except OSError:
            return False
        finally:
            os.close(fd)
        return True

    def read(self) -> tuple[list[dict[str, Any]], int]:
        """The entries, and how many lines could not be read."""
        try:
            with open(self.path, encoding="utf-8", errors="replace") as f:
                lines = f.readlines()
        except FileNotFoundError:
            return [], 0
        out, bad = [], 0
        for line in lines:
            entry = _entry(line)
            if entry is None:
                bad += 1 if line.strip() else 0
            else:
                out.append(entry)
        return out, bad

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.path + ".lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def retry(self, send: Callable[[Batch], SendResult]) -> tuple[int, int, int]:
        """Resend every entry; keep those not delivered. Returns (delivered, kept, unreadable)."""
        if not os.path.exists(self.path):
            return 0, 0, 0
        with self._locked():
            entries, bad = self.read()
            if bad:
                quarantine_copy(self.path)
            kept: list[dict[str, Any]] = []
            delivered = 0
            for e in entries:
                batch = Batch(e["consumerId"], e["apiId"], e["metric"], e["units"], e["events"],
                              e["idempotencyKey"])
                result = send(batch)
                if result.outcome == "ok":
                    delivered += 1
                else:
                    e["reason"], e["message"] = result.reason, result.message[:500]
                    kept.append(e)
            tmp = f"{self.path}.{os.getpid()}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                for e in kept:
                    f.write(json.dumps(e, ensure_ascii=True) + "\n")
            os.replace(tmp, self.path)
        return delivered, len(kept), bad


def quarantine_copy(path: str) -> None:
    """Keep a copy of a damaged file aside before it is rewritten without its bad lines."""
    dest = f"{path}.corrupt-{int(time.time())}-{os.getpid()}"
    with contextlib.suppress(OSError):
        with open(path, "rb") as src:
            data = src.read()
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)


def _entry(line: str) -> dict[str, Any] | None:
    try:
        e = json.loads(line)
    except ValueError:
        return None
    if not isinstance(e, dict):
        return None
    ok = (all(isinstance(e.get(k), str) and e.get(k) for k in ("consumerId", "apiId", "metric",
                                                               "idempotencyKey"))
          and isinstance(e.get("units"), int) and not isinstance(e.get("units"), bool)
          and 0 <= e["units"] < 2**53)
    if not ok:
        return None
    e.setdefault("events", 1)
    if not isinstance(e["events"], int):
        e["events"] = 1
    return e
