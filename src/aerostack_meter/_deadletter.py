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
        data = line.encode()
        try:
            written = os.write(fd, data)
        except OSError:
            return False
        finally:
            os.close(fd)
        return written == len(data)  # cut short (a full disk): not kept (the reader skips the part)

    def read(self) -> tuple[list[dict[str, Any]], int]:
        """The entries (with those of a retry run in progress or interrupted), and how many lines
        could not be read."""
        out, bad = [], 0
        for claim in self._claims():
            done = _done(claim)
            entries, n = DeadLetters._read_file(claim)
            out += [e for e in entries if _token(e["idempotencyKey"]) not in done]
            bad += n
        entries, n = DeadLetters._read_file(self.path)
        return out + entries, bad + n

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
        """Resend every entry; keep those not delivered. Returns (delivered, kept, unreadable).

        One run at a time (a lock). The run first claims the file by renaming it, so processes
        that keep adding dead letters meanwhile append to a new one (never overwritten); each
        delivery is noted in a progress file before the next is sent, so a run that is
        interrupted (Ctrl-C, kill -9) is finished by the next one without sending anything twice.
        """
        if not os.path.isdir(os.path.dirname(self.path)):
            return 0, 0, 0
        with self._locked():
            claims = self._claims()
            if os.path.exists(self.path):
                claim = f"{self.path}.retrying-{os.getpid()}-{time.time_ns()}"
                os.replace(self.path, claim)
                claims.append(claim)
            delivered = kept = bad_total = 0
            for claim in claims:
                d, k, bad = self._retry_claim(claim, send)
                delivered, kept, bad_total = delivered + d, kept + k, bad_total + bad
        return delivered, kept, bad_total

    def _claims(self) -> list[str]:
        """Files claimed by earlier runs that did not finish (oldest first)."""
        folder, name = os.path.split(self.path)
        try:
            names = os.listdir(folder)
        except OSError:
            return []
        return sorted(os.path.join(folder, n) for n in names
                      if n.startswith(name + ".retrying-") and not n.endswith(".done"))

    def _retry_claim(self, claim: str, send: Callable[[Batch], SendResult]) -> tuple[int, int, int]:
        entries, bad = DeadLetters._read_file(claim)
        if bad:
            quarantine_copy(claim)
        progress = claim + ".done"
        done = _done(claim)
        fd = os.open(progress, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        delivered = 0
        again: list[str] = []
        try:
            for e in entries:
                key = e["idempotencyKey"]
                token = _token(key)
                if token in done:
                    continue  # delivered by the run that was interrupted
                result = send(Batch(e["consumerId"], e["apiId"], e["metric"], e["units"], e["events"], key))
                if result.outcome == "ok":
                    os.write(fd, (token + "\n").encode())
                    delivered += 1
                else:
                    e["reason"], e["message"] = result.reason, result.message[:500]
                    again.append(json.dumps(e, ensure_ascii=True) + "\n")
        finally:
            os.close(fd)
        if again:  # refused again: back with the others (appended, like any new dead letter)
            out = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(out, "".join(again).encode())
            finally:
                os.close(out)
        os.unlink(claim)
        with contextlib.suppress(OSError):
            os.unlink(progress)
        return delivered, len(again), bad

    @staticmethod
    def _read_file(path: str) -> tuple[list[dict[str, Any]], int]:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
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


def _token(key: str) -> str:
    """An idempotency key as one line of a progress file, whatever it holds."""
    return json.dumps(key, ensure_ascii=True)[1:-1]


def _done(claim: str) -> set[str]:
    """The keys a retry run of ``claim`` delivered (its progress file)."""
    try:
        with open(claim + ".done", encoding="ascii", errors="replace") as f:
            return {line.rstrip("\n") for line in f}
    except FileNotFoundError:
        return set()


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
