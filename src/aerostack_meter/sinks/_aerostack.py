"""The Aerostack Gateway billing API sink: ``POST {base_url}/gateway/billing/log``, one batch a request."""

from __future__ import annotations

import email.utils
import json
import ssl
import threading
import time
from typing import Any

import httpx

from .._secret import Secret, header_key
from .._version import __version__
from ._base import OK, Batch, SendResult

__all__ = ["AerostackSink", "parse_retry_after"]

_MAX_BODY = 64 * 1024  # never read more of a response than this (a hostile server may send GBs)
# Transient: 408, 425, 429 and every 5xx but 501 (not implemented) and 505 (HTTP version), so
# also Cloudflare's 52x and 529 "overloaded".
_CLIENT_RETRY = frozenset({408, 425, 429})
_NEVER_RETRY_5XX = frozenset({501, 505})
# Statuses after which the server may have processed the request (a proxy timed out or failed
# in front of a server that may have done the work).
_AMBIGUOUS_STATUS = frozenset({502, 504, 520, 524})
_PAUSE_STATUS = frozenset({401, 403})

_UA = f"aerostack-meter/{__version__}"


def parse_retry_after(value: str | None, *, cap: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date), capped."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), cap)


# Error codes read as "the consumer's wallet cannot pay", whatever the status (docs/budgets.md).
_FUNDS_CODES = frozenset({"INSUFFICIENT_BALANCE", "INSUFFICIENT_FUNDS", "INSUFFICIENT_CREDITS",
                          "PAYMENT_REQUIRED"})


def _server_code(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return ""
    code = data.get("code") if isinstance(data, dict) else None
    return code.upper() if isinstance(code, str) else ""


def _server_message(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body[:200].decode("utf-8", "replace").strip()
    if isinstance(data, dict):
        for field in ("message", "error", "code"):
            value = data.get(field)
            if isinstance(value, str) and value:
                return value
            if isinstance(value, dict) and isinstance(value.get("message"), str):
                return str(value["message"])
    return ""


class AerostackSink:
    """Speaks the billing endpoint over one keep-alive ``httpx.Client`` shared by the sender threads.

    ``api_key``: the secret key (a string or a ``Secret``); ``base_url``: the API root (no trailing
    slash needed); timeouts in seconds; ``concurrency``: connections kept; ``verify``: TLS
    verification as httpx takes it; ``transport``: an httpx transport (tests, proxies);
    ``max_retry_after``: the cap on a server's ``Retry-After``.
    """

    def __init__(self, api_key: str | Secret, *, base_url: str = "https://api.aerostack.dev/v1",
                 connect_timeout: float = 2.0, read_timeout: float = 5.0, concurrency: int = 4,
                 verify: bool | str | ssl.SSLContext = True,
                 transport: httpx.BaseTransport | None = None, max_retry_after: float = 60.0) -> None:
        raw = api_key.reveal() if isinstance(api_key, Secret) else api_key
        self._key = Secret(header_key(raw, "AerostackSink"))
        self.url = base_url.rstrip("/") + "/gateway/billing/log"
        self.destination = base_url.rstrip("/")
        #: names the key without revealing it: usage journaled under it is only sent with it
        self.key_fingerprint = self._key.fingerprint()
        self._timeout = httpx.Timeout(read_timeout, connect=connect_timeout)
        self._concurrency = concurrency
        self._verify = verify
        self._transport = transport
        self._max_retry_after = max_retry_after
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    def _get_client(self) -> httpx.Client:
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    kwargs: dict[str, Any] = {
                        "timeout": self._timeout,
                        "limits": httpx.Limits(max_connections=self._concurrency,
                                               max_keepalive_connections=self._concurrency),
                        "headers": {"User-Agent": _UA, "Content-Type": "application/json"},
                        "follow_redirects": False,
                        "verify": self._verify,
                        "trust_env": False,
                    }
                    if self._transport is not None:
                        kwargs["transport"] = self._transport
                    self._client = httpx.Client(**kwargs)
                client = self._client
        return client

    def send(self, batch: Batch) -> SendResult:
        try:
            body = json.dumps(batch.wire(), ensure_ascii=False, separators=(",", ":")).encode()
        except UnicodeEncodeError:  # a lone surrogate in an id: no request can carry it
            return SendResult("fatal", reason="unencodable",
                              message="consumerId, apiId or metric is not valid Unicode")
        headers = {"X-Aerostack-Key": self._key.reveal(), "Idempotency-Key": batch.idempotency_key}
        try:
            with self._get_client().stream("POST", self.url, content=body, headers=headers) as resp:
                data = b""
                for chunk in resp.iter_bytes():
                    data += chunk
                    if len(data) >= _MAX_BODY:
                        break
                status = resp.status_code
                retry_after = resp.headers.get("Retry-After")
        except httpx.TimeoutException as exc:
            # A connect or pool timeout means nothing was sent; a read/write timeout may mean it was.
            ambiguous = not isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout))
            return SendResult("retry", reason=type(exc).__name__, ambiguous=ambiguous)
        except httpx.ConnectError as exc:
            return SendResult("retry", reason="ConnectError", message=_safe(exc, self._key))
        except httpx.LocalProtocolError as exc:  # refused before anything was sent
            return SendResult("retry", reason="LocalProtocolError", message=_safe(exc, self._key))
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            return SendResult("retry", reason=type(exc).__name__, ambiguous=True,
                              message=_safe(exc, self._key))
        except httpx.HTTPError as exc:
            return SendResult("retry", reason=type(exc).__name__, ambiguous=True,
                              message=_safe(exc, self._key))
        return self._classify(status, data, retry_after)

    def _classify(self, status: int, data: bytes, retry_after: str | None) -> SendResult:
        if 200 <= status < 300:
            # A 2xx is final (retrying a processed request would double it); an odd body is only
            # reported, as the reason of the "ok".
            if not data:
                return SendResult("ok", reason="empty_response")
            if len(data) >= _MAX_BODY:
                return SendResult("ok", reason="oversized_response")
            try:
                parsed = json.loads(data)
            except ValueError:
                return SendResult("ok", reason="unparseable_response")
            if isinstance(parsed, dict) and parsed.get("success") is False:
                return SendResult("fatal", reason="rejected_success_false",
                                  message=_server_message(data))
            return OK
        if status in _CLIENT_RETRY or (500 <= status < 600 and status not in _NEVER_RETRY_5XX):
            return SendResult(
                "retry",
                reason=f"http_{status}",
                retry_after=parse_retry_after(retry_after, cap=self._max_retry_after),
                ambiguous=status in _AMBIGUOUS_STATUS,
                message=_server_message(data),
            )
        if status == 402 or _server_code(data) in _FUNDS_CODES:
            return SendResult("fatal", reason="insufficient_funds", message=_server_message(data))
        if status in _PAUSE_STATUS:
            return SendResult("pause", reason=f"rejected_{status}", message=_server_message(data))
        return SendResult("fatal", reason=f"rejected_{status}", message=_server_message(data))

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def after_fork(self) -> None:
        # Never close inherited connections in the child: a TLS close_notify would break the parent's.
        self._lock = threading.Lock()
        self._client = None

    def __repr__(self) -> str:
        return f"AerostackSink(url={self.url!r}, api_key='***')"


def _safe(exc: BaseException, key: Secret) -> str:
    return str(exc).replace(key.reveal(), "***")
