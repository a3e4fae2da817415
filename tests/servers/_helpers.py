"""Helpers shared by the servers tests."""

from __future__ import annotations

import httpx

from aerostack_meter.servers import GatewayHandle

KEY = "ac_secret_servers_suite"


def post_log(
    http: httpx.Client,
    gw: GatewayHandle,
    body: object = None,
    *,
    key: str | None = KEY,
    idem: str | None = None,
    timeout: float = 5.0,
) -> httpx.Response:
    """POST one billing event (a valid one by default)."""
    headers = {}
    if key is not None:
        headers["X-Aerostack-Key"] = key
    if idem is not None:
        headers["Idempotency-Key"] = idem
    if body is None:
        body = {"consumerId": "usr_1", "apiId": "api_1", "units": 5}
    return http.post(gw.billing_url, json=body, headers=headers, timeout=timeout)
