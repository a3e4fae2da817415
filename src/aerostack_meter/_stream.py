"""The Redis stream layout shared by the Redis sink (producers) and the relay (consumers).

One stream holds usage records; one consumer group (created by whichever side comes first, from
id ``0`` so nothing appended before the first relay is skipped) tracks what was delivered. Each
stream entry is one record, a coalesced sum under one (consumer, API, metric) key:

    r  record id (the batch's Idempotency-Key: the same after a retried XADD)
    c  consumerId     a  apiId     m  metric     u  units (decimal)
    n  events summed  e  "1" when any part is an estimate

Everything is configured in the URL (``redis://[:password@]host:port/db?stream=...``); the query
parameters below are ours and are removed before the URL reaches redis-py.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ._errors import ConfigError
from ._log import log_limited

if TYPE_CHECKING:
    import redis

__all__ = ["DEFAULT_GROUP", "DEFAULT_MAXLEN", "DEFAULT_STREAM", "StreamConfig", "ensure_group",
           "safe_trim", "safe_url"]

DEFAULT_STREAM = "aerostack:usage"
DEFAULT_GROUP = "aerostack-relay"
DEFAULT_MAXLEN = 1_000_000
_OUR_PARAMS = ("stream", "group", "maxlen")


_SECRET_PARAMS = ("pass", "secret", "token", "auth", "credential")  # parts of a query name


def _secret_param(name: str) -> bool:
    lowered = name.lower()
    return any(part in lowered for part in _SECRET_PARAMS)


def safe_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (for logs and messages): the one in its user
    part, and the value of any query parameter redis-py reads one from (``?password=...``; any name
    with ``pass``, ``secret``, ``token``, ``auth`` or ``credential`` in it)."""
    parts = urlsplit(url)
    netloc, query = parts.netloc, parts.query
    if parts.password is not None:
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        netloc = f"{parts.username or ''}:***@{host}"
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_secret_param(k) for k, _ in pairs):
            query = urlencode([(k, "***" if _secret_param(k) else v) for k, v in pairs], safe="*")
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


@dataclass(frozen=True)
class StreamConfig:
    """Where records live: the redis-py URL, the stream key, the consumer group and the cap."""

    redis_url: str
    stream: str = DEFAULT_STREAM
    group: str = DEFAULT_GROUP
    maxlen: int = DEFAULT_MAXLEN

    @classmethod
    def from_url(cls, url: str) -> StreamConfig:
        """Parse ``redis://``, ``rediss://`` or ``unix://`` URLs with our ``stream``, ``group``
        and ``maxlen`` query parameters. Raises :class:`ConfigError` for anything else."""
        if not isinstance(url, str):
            raise ConfigError("sink", f"a Redis URL must be a string, got {type(url).__name__}")
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ConfigError("sink", f"expected a redis://, rediss:// or unix:// URL, got {safe_url(url)!r}")
        ours: dict[str, str] = {}
        theirs: list[tuple[str, str]] = []
        for k, v in parse_qsl(parts.query, keep_blank_values=True):
            (ours.__setitem__(k, v) if k in _OUR_PARAMS else theirs.append((k, v)))
        maxlen = DEFAULT_MAXLEN
        if "maxlen" in ours:
            try:
                maxlen = int(ours["maxlen"])
            except ValueError:
                raise ConfigError("sink", f"maxlen must be a whole number, got {ours['maxlen']!r}") from None
            if maxlen <= 0:
                raise ConfigError("sink", f"maxlen must be positive, got {maxlen}")
        for name in ("stream", "group"):
            if name in ours and not ours[name].strip():
                raise ConfigError("sink", f"{name} must not be empty")
        redis_url = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(theirs), parts.fragment))
        return cls(redis_url, ours.get("stream", DEFAULT_STREAM), ours.get("group", DEFAULT_GROUP), maxlen)

    @property
    def dead_stream(self) -> str:
        """Where the relay moves records the billing API refused for good (400 and the like)."""
        return self.stream + ":dead"

    def record_key(self, record_id: str) -> str:
        """The per-record state key (taken, sending, delivered) the relays share, with a TTL."""
        return f"{self.stream}:rec:{record_id}"

    def relay_key(self, name: str) -> str:
        """A relay's published counters (a hash, refreshed while it runs)."""
        return f"{self.stream}:relay:{name}"

    def connect(self, **kwargs: Any) -> redis.Redis:
        import redis as _redis

        kwargs.setdefault("socket_timeout", 5.0)
        kwargs.setdefault("socket_connect_timeout", 2.0)
        kwargs.setdefault("health_check_interval", 30)
        return _redis.Redis.from_url(self.redis_url, **kwargs)

    def __repr__(self) -> str:
        return (f"StreamConfig({safe_url(self.redis_url)!r}, stream={self.stream!r}, "
                f"group={self.group!r}, maxlen={self.maxlen})")


def ensure_group(client: redis.Redis, cfg: StreamConfig) -> None:
    """Create the stream and its consumer group (from the first entry) unless they exist."""
    import redis as _redis

    try:
        client.xgroup_create(cfg.stream, cfg.group, id="0", mkstream=True)
    except _redis.ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def _next_id(entry_id: str) -> str:
    ms, _, seq = entry_id.partition("-")
    return f"{ms}-{int(seq or 0) + 1}"


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def undelivered_floor(client: redis.Redis, cfg: StreamConfig) -> str | None:
    """The lowest entry id any consumer group has not acknowledged yet (``None``: no group, so
    nothing is known to be delivered). Entries below it are delivered and safe to trim."""
    floor: str | None = None
    groups = client.xinfo_groups(cfg.stream)
    if not groups:
        return None
    for g in groups:
        name = _s(g["name"])
        candidates = [_next_id(_s(g["last-delivered-id"]))]
        if int(g.get("pending", 0)):
            summary = client.xpending(cfg.stream, name)
            if summary.get("min"):
                candidates.append(_s(summary["min"]))
        low = min(candidates, key=_id_key)
        floor = low if floor is None else min(floor, low, key=_id_key)
    return floor


def safe_trim(client: redis.Redis, cfg: StreamConfig) -> tuple[int, int]:
    """Trim delivered entries so the stream stays near ``maxlen``; never trim an undelivered one.

    Returns (entries trimmed, entries over the cap that were kept because they are undelivered).
    """
    length = int(client.xlen(cfg.stream))
    if length <= cfg.maxlen:
        return 0, 0
    floor = undelivered_floor(client, cfg)
    trimmed = 0
    if floor is not None:
        # MINID never removes an entry at or above the floor; "~" only trims whole nodes (cheap).
        trimmed = int(client.xtrim(cfg.stream, minid=floor, approximate=True))
        if trimmed == 0:
            trimmed = int(client.xtrim(cfg.stream, minid=floor, approximate=False))
    over = max(0, int(client.xlen(cfg.stream)) - cfg.maxlen)
    if over:
        log_limited("redis_over_cap", logging.WARNING,
                    "aerostack_meter: the Redis stream %r holds %d undelivered records past its cap "
                    "(maxlen=%d); they are kept, not trimmed. Are the relays running?",
                    cfg.stream, over, cfg.maxlen)
    return trimmed, over


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
