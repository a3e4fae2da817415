"""Fault injection for the gateway emulator's billing endpoint.

`FaultConfig` is the declarative setting (from CLI flags, `start_gateway(faults=...)` or
`POST /_emulator/faults`); `FaultState` holds the live "next N" counters and the seeded RNG and
answers, per request, which fault to inject. Pure logic, no I/O.

Order of evaluation for one request (the first that fires wins): `hang` body mode,
`rate_limit_next`, `fail_next`, `fail_rate`, `drop_next`/`drop_rate`, other `bad_body` modes;
then the request is processed and `lose_response_next`/`lose_response_rate` (or a `bad_body`
mode with `bad_body_commits`) may fire after the commit. `latency_ms` is added before all of them.
"""

from __future__ import annotations

import random
import threading
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

__all__ = ["BAD_BODY_MODES", "Fault", "FaultConfig", "FaultConfigError", "FaultState"]

BAD_BODY_MODES = ("html", "invalid_json", "empty", "huge", "hang")
LOSE_MODES = ("drop", "delay")

FaultKind = Literal["hang", "rate_limit", "fail", "drop", "bad_body", "lose_response"]


class FaultConfigError(ValueError):
    """A fault setting has the wrong type or range."""


@dataclass
class FaultConfig:
    fail_rate: float = 0.0
    fail_statuses: list[int] = field(default_factory=lambda: [500, 502, 503])
    fail_next: int = 0
    fail_status: int = 500
    rate_limit_next: int = 0
    retry_after: int = 1
    latency_ms: float = 0.0
    drop_rate: float = 0.0
    drop_next: int = 0
    lose_response_rate: float = 0.0
    lose_response_next: int = 0
    lose_response_mode: str = "drop"
    lose_response_delay_ms: float = 30_000.0
    bad_body: str | None = None
    bad_body_commits: bool = False
    huge_bytes: int = 50 * 1024 * 1024
    seed: int | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaultConfig:
        """Build and validate a config; unknown keys and wrong types raise `FaultConfigError`."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise FaultConfigError(f"unknown fault setting(s): {', '.join(unknown)}")
        cfg = cls(**data)
        cfg.validate()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> None:
        for name in ("fail_rate", "drop_rate", "lose_response_rate"):
            value = getattr(self, name)
            if not _is_number(value) or not 0.0 <= float(value) <= 1.0:
                raise FaultConfigError(f"{name} must be a number between 0 and 1")
            setattr(self, name, float(value))
        for name in (
            "fail_next",
            "rate_limit_next",
            "drop_next",
            "lose_response_next",
            "retry_after",
        ):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                raise FaultConfigError(f"{name} must be a non-negative integer")
        if not _is_int(self.huge_bytes) or self.huge_bytes < 1:
            raise FaultConfigError("huge_bytes must be a positive integer")
        for name in ("latency_ms", "lose_response_delay_ms"):
            value = getattr(self, name)
            if not _is_number(value) or value < 0:
                raise FaultConfigError(f"{name} must be a non-negative number")
            setattr(self, name, float(value))
        if not isinstance(self.fail_statuses, list) or not self.fail_statuses:
            raise FaultConfigError("fail_statuses must be a non-empty list of HTTP statuses")
        for status in [*self.fail_statuses, self.fail_status]:
            if not _is_int(status) or not 400 <= status <= 599:
                raise FaultConfigError("fault statuses must be integers in 400..599")
        if self.bad_body is not None and self.bad_body not in BAD_BODY_MODES:
            raise FaultConfigError(f"bad_body must be one of {', '.join(BAD_BODY_MODES)} or null")
        if self.lose_response_mode not in LOSE_MODES:
            raise FaultConfigError("lose_response_mode must be 'drop' or 'delay'")
        if not isinstance(self.bad_body_commits, bool):
            raise FaultConfigError("bad_body_commits must be a boolean")
        if self.seed is not None and not _is_int(self.seed):
            raise FaultConfigError("seed must be an integer or null")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Fault:
    kind: FaultKind
    status: int = 0
    detail: str = ""


class FaultState:
    """The live fault configuration: remaining "next N" counters and the RNG."""

    def __init__(self, config: FaultConfig | None = None) -> None:
        self._lock = threading.Lock()
        self.config = FaultConfig()
        self._rng = random.Random()
        self.replace(config or FaultConfig())

    def replace(self, config: FaultConfig) -> None:
        with self._lock:
            self.config = config
            self._rng = random.Random(config.seed)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return self.config.to_dict()

    def _take(self, name: str) -> bool:
        remaining = getattr(self.config, name)
        if remaining > 0:
            setattr(self.config, name, remaining - 1)
            return True
        return False

    def before(self) -> Fault | None:
        """The fault to inject before the request is processed, if any."""
        with self._lock:
            cfg = self.config
            if cfg.bad_body == "hang":
                return Fault("hang")
            if self._take("rate_limit_next"):
                return Fault("rate_limit", 429)
            if self._take("fail_next"):
                return Fault("fail", cfg.fail_status)
            if cfg.fail_rate > 0 and self._rng.random() < cfg.fail_rate:
                return Fault("fail", self._rng.choice(cfg.fail_statuses))
            if self._take("drop_next") or (
                cfg.drop_rate > 0 and self._rng.random() < cfg.drop_rate
            ):
                return Fault("drop")
            if cfg.bad_body is not None and not cfg.bad_body_commits:
                return Fault("bad_body", 200, cfg.bad_body)
            return None

    def after_commit(self) -> Fault | None:
        """The fault to inject after an accepted request was committed, if any."""
        with self._lock:
            cfg = self.config
            if self._take("lose_response_next") or (
                cfg.lose_response_rate > 0 and self._rng.random() < cfg.lose_response_rate
            ):
                return Fault("lose_response", 200, cfg.lose_response_mode)
            if cfg.bad_body is not None and cfg.bad_body_commits:
                return Fault("bad_body", 200, cfg.bad_body)
            return None
