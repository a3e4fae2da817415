"""Frozen settings: explicit arguments, then the environment, then defaults; validated once."""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from ._errors import ConfigError
from ._secret import Secret, header_key

if TYPE_CHECKING:
    import ssl

    import httpx

    from ._budget import Budget
    from ._events import UsageEvent
    from ._usage import MetricPolicy
    from .sinks import Sink

__all__ = ["DEFAULT_BASE_URL", "DEFAULT_LEDGER", "Secret", "Settings", "build_settings"]

DEFAULT_BASE_URL = "https://api.aerostack.dev/v1"
DEFAULT_LEDGER = "aerostack-usage.db"

MissingConsumerMode = Literal["warn", "raise", "ignore"]
_MISSING_MODES = ("warn", "raise", "ignore")


@dataclass(frozen=True)
class Settings:
    """Everything the meter needs, validated. Build it with :func:`build_settings`."""

    api_key: Secret | None = None
    api_id: str | None = None
    base_url: str = DEFAULT_BASE_URL
    default_consumer_id: str | None = None
    ledger_path: str = DEFAULT_LEDGER
    disabled: bool = False
    # reporter
    flush_interval: float = 1.0
    max_queue_size: int = 100_000
    coalesce: bool = True
    concurrency: int = 4
    connect_timeout: float = 2.0
    read_timeout: float = 5.0
    max_retries: int = 20
    backoff_base: float = 0.25
    max_backoff: float = 10.0
    max_retry_after: float = 60.0
    exit_timeout: float = 2.0
    handle_sigterm: bool = False
    allow_insecure: bool = False
    verify: bool | str | ssl.SSLContext = True
    transport: httpx.BaseTransport | None = None
    #: a Sink, or a Redis URL (``redis://...``; the ``redis`` extra) for ``aerostack-meter relay``
    sink: Sink | str | None = None
    # durability: usage journaled under state_dir before the call returns (see docs/reliability.md)
    durable: bool = True
    state_dir: str | None = None
    spool_path: str | None = None  # the former name of state_dir (still accepted)
    spool_max_bytes: int = 64 * 1024 * 1024
    # attribution and metrics
    on_missing_consumer: MissingConsumerMode = "warn"
    consumer_resolver: Callable[[], str | None] | None = None
    metrics: MetricPolicy = "tokens"
    before_send: Callable[[UsageEvent], UsageEvent | None] | None = None
    # spend control
    budget: Budget | None = None
    on_budget_error: Literal["open", "closed"] = "open"
    on_rejected: Callable[[UsageEvent, str], None] | None = None
    # instrumentation
    instrument: bool | tuple[str, ...] = True
    stream_usage: bool | Callable[[str], bool] | Mapping[str, bool] = True
    #: also record ``gen_ai.client.token.usage`` through OpenTelemetry (the ``otel`` extra):
    #: True for the application's global MeterProvider, or a MeterProvider to use
    otel: Any = False

    def __repr__(self) -> str:  # the dataclass repr would be fine (Secret hides itself); keep it short
        return (
            f"Settings(base_url={self.base_url!r}, api_id={self.api_id!r}, "
            f"api_key={'set' if self.api_key else 'unset'}, sink={_sink_name(self.sink)})"
        )


def _sink_name(sink: object) -> str | None:
    if sink is None:
        return None
    return "RedisSink" if isinstance(sink, str) else type(sink).__name__


_OPTION_NAMES = {f.name for f in fields(Settings)} - {"api_key", "api_id", "base_url"}


def _env(name: str, environ: Mapping[str, str]) -> str | None:
    value = environ.get(name)
    return value if value not in (None, "") else None


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _env_flag(setting: str, name: str, environ: Mapping[str, str]) -> bool | None:
    """A boolean environment variable: None when unset or empty; ConfigError on a word it can't read."""
    value = _env(name, environ)
    if value is None:
        return None
    word = value.strip().lower()
    if word in _TRUE or word in _FALSE:
        return word in _TRUE
    raise ConfigError(setting, f"{name} must be one of {'/'.join(_TRUE)} or {'/'.join(_FALSE)}, "
                               f"got {value!r}")


def _is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain") or host.endswith(".localhost"):
        return True
    import ipaddress  # only for a plain-http URL

    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _check_positive(name: str, value: Any, *, integer: bool = False, allow_zero: bool = False) -> None:
    kinds: tuple[type, ...] = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise ConfigError(name, f"must be a {'whole number' if integer else 'number'}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(name, f"must be finite, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):  # type: ignore[operator]
        raise ConfigError(name, f"must be {'non-negative' if allow_zero else 'positive'}, got {value!r}")


def _check_id(name: str, value: Any) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise ConfigError(name, f"must be a string, got {type(value).__name__}")
    if not value.strip():
        raise ConfigError(name, "must not be empty")


def validate_base_url(url: Any, *, allow_insecure: bool) -> str:
    if not isinstance(url, str):
        raise ConfigError("base_url", f"must be a string, got {type(url).__name__}")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError("base_url", f"must be an http(s) URL with a host, got {url!r}")
    if parts.scheme == "http" and not _is_loopback(parts.hostname) and not allow_insecure:
        raise ConfigError(
            "base_url",
            f"plain http to a non-loopback host ({parts.hostname}) would send the API key in clear; "
            "use https, or pass allow_insecure=True",
        )
    return url.rstrip("/")


def build_settings(
    api_key: str | None = None,
    *,
    api_id: str | None = None,
    base_url: str | None = None,
    environ: Mapping[str, str] | None = None,
    **options: Any,
) -> Settings:
    """Merge explicit arguments over the environment over defaults, and validate the result."""
    env = os.environ if environ is None else environ
    unknown = sorted(set(options) - _OPTION_NAMES)
    if unknown:
        raise ConfigError(unknown[0], f"unknown option; known options are {', '.join(sorted(_OPTION_NAMES))}")

    key = api_key if api_key is not None else _env("AEROSTACK_API_KEY", env)
    if key is not None:
        key = header_key(key)
    api_id = api_id if api_id is not None else _env("AEROSTACK_API_ID", env)
    _check_id("api_id", api_id)
    options.setdefault("default_consumer_id", _env("AEROSTACK_METER_DEFAULT_CONSUMER", env))
    _check_id("default_consumer_id", options["default_consumer_id"])
    if "ledger_path" not in options and _env("AEROSTACK_METER_LEDGER", env):
        options["ledger_path"] = _env("AEROSTACK_METER_LEDGER", env)
    if "spool_path" not in options and _env("AEROSTACK_METER_SPOOL", env):
        options["spool_path"] = _env("AEROSTACK_METER_SPOOL", env)
    if "sink" not in options and _env("AEROSTACK_METER_REDIS_URL", env):
        options["sink"] = _env("AEROSTACK_METER_REDIS_URL", env)
    if isinstance(options.get("sink"), str):
        from ._stream import StreamConfig

        StreamConfig.from_url(options["sink"])  # raises ConfigError naming the sink
    if "otel" not in options and (otel := _env_flag("otel", "AEROSTACK_METER_OTEL", env)) is not None:
        options["otel"] = otel
    if "state_dir" not in options:
        options["state_dir"] = options.get("spool_path") or _env("AEROSTACK_METER_STATE_DIR", env)
    if "durable" not in options and (durable := _env_flag("durable", "AEROSTACK_METER_DURABLE", env)) is not None:
        options["durable"] = durable
    if "disabled" not in options:
        options["disabled"] = bool(_env_flag("disabled", "AEROSTACK_METER_DISABLED", env))

    for name in ("flush_interval", "connect_timeout", "read_timeout", "max_backoff", "backoff_base",
                 "max_retry_after"):
        if name in options:
            _check_positive(name, options[name])
    if "exit_timeout" in options:
        _check_positive("exit_timeout", options["exit_timeout"], allow_zero=True)
    for name in ("max_queue_size", "concurrency", "spool_max_bytes"):
        if name in options:
            _check_positive(name, options[name], integer=True)
    if "max_retries" in options:
        _check_positive("max_retries", options["max_retries"], integer=True, allow_zero=True)
    for name in ("coalesce", "disabled", "handle_sigterm", "allow_insecure", "durable"):
        if name in options and not isinstance(options[name], bool):
            raise ConfigError(name, f"must be True or False, got {options[name]!r}")
    mode = options.get("on_missing_consumer", "warn")
    if mode not in _MISSING_MODES:
        raise ConfigError("on_missing_consumer", f"must be one of {_MISSING_MODES}, got {mode!r}")
    if options.get("budget") is not None:
        from ._budget import check_budget

        options["budget"] = check_budget(options["budget"])
    if options.get("on_budget_error", "open") not in ("open", "closed"):
        raise ConfigError("on_budget_error", f'must be "open" or "closed", got {options["on_budget_error"]!r}')
    for name in ("consumer_resolver", "before_send", "on_rejected"):
        if options.get(name) is not None and not callable(options[name]):
            raise ConfigError(name, "must be callable")
    if "metrics" in options:
        from ._usage import check_policy

        check_policy(options["metrics"])
    verify = options.get("verify", True)
    ssl_mod = sys.modules.get("ssl")  # an SSLContext means ssl is imported: never import it here
    if not isinstance(verify, (bool, str)) and not (ssl_mod and isinstance(verify, ssl_mod.SSLContext)):
        raise ConfigError("verify", "must be True/False, a CA bundle path, or an ssl.SSLContext")
    for name in ("ledger_path", "spool_path", "state_dir"):
        if options.get(name) is not None and not isinstance(options[name], (str, os.PathLike)):
            raise ConfigError(name, "must be a path")
        if options.get(name) is not None:
            options[name] = os.fspath(options[name])
    instrument = options.get("instrument", True)
    if isinstance(instrument, (list, tuple, set, frozenset)):
        from .providers import names

        known = names()
        bad = [p for p in instrument if p not in known]
        if bad:
            raise ConfigError("instrument", f"unknown provider {bad[0]!r}; known: {known}")
        options["instrument"] = tuple(instrument)
    elif not isinstance(instrument, bool):
        raise ConfigError("instrument", "must be True/False or a list of provider names")

    url = base_url if base_url is not None else (_env("AEROSTACK_BASE_URL", env) or DEFAULT_BASE_URL)
    url = validate_base_url(url, allow_insecure=bool(options.get("allow_insecure", False)))

    return Settings(
        api_key=Secret(key) if key is not None else None, api_id=api_id, base_url=url, **options
    )
