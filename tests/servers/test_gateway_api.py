"""The billing endpoint: auth, field-by-field validation, success, persistence of each row."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from aerostack_meter.servers import GatewayHandle, start_gateway

from ._helpers import KEY, post_log


def test_success_returns_logged_units_and_persists_row(
    gw: GatewayHandle, http: httpx.Client
) -> None:
    r = post_log(
        http,
        gw,
        {"consumerId": "usr_a", "apiId": "api_x", "units": 42, "metric": "tokens"},
        idem="k-1",
    )
    assert r.status_code == 200
    assert r.json() == {"success": True, "loggedUnits": 42}
    [row] = gw.client.log()
    assert row["consumerId"] == "usr_a"
    assert row["apiId"] == "api_x"
    assert row["metric"] == "tokens"
    assert row["units"] == 42
    assert row["idempotencyKey"] == "k-1"
    assert row["status"] == 200
    assert row["ts"] > 0


def test_metric_defaults_to_units_and_idempotency_key_may_be_absent(
    gw: GatewayHandle, http: httpx.Client
) -> None:
    assert post_log(http, gw, {"consumerId": "u", "apiId": "a", "units": 0}).status_code == 200
    [row] = gw.client.log()
    assert row["metric"] == "units"
    assert row["units"] == 0
    assert row["idempotencyKey"] is None


@pytest.mark.parametrize("key", [None, "", "ac_secret_wrong"])
def test_missing_empty_or_unknown_key_is_401(
    gw: GatewayHandle, http: httpx.Client, key: str | None
) -> None:
    r = post_log(http, gw, key=key)
    assert r.status_code == 401
    body = r.json()
    assert body["code"] == "AUTH_INVALID_KEY"
    assert isinstance(body["message"], str) and body["message"]
    assert body["details"] == {}
    assert gw.client.log() == []
    assert gw.client.stats()["rejected_auth"] == 1


def test_keys_none_accepts_any_non_empty_key(http: httpx.Client) -> None:
    with start_gateway() as gw:
        assert post_log(http, gw, key="anything-at-all").status_code == 200
        assert post_log(http, gw, key="").status_code == 401
        assert post_log(http, gw, key=None).status_code == 401


VALID: dict[str, Any] = {"consumerId": "usr_1", "apiId": "api_1", "units": 5}


def _without(name: str) -> dict[str, Any]:
    return {k: v for k, v in VALID.items() if k != name}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (_without("consumerId"), "consumerId"),
        ({**VALID, "consumerId": ""}, "consumerId"),
        ({**VALID, "consumerId": "   "}, "consumerId"),
        ({**VALID, "consumerId": 12}, "consumerId"),
        ({**VALID, "consumerId": None}, "consumerId"),
        (_without("apiId"), "apiId"),
        ({**VALID, "apiId": ""}, "apiId"),
        ({**VALID, "apiId": ["a"]}, "apiId"),
        (_without("units"), "units"),
        ({**VALID, "units": True}, "units"),
        ({**VALID, "units": False}, "units"),
        ({**VALID, "units": 1.0}, "units"),
        ({**VALID, "units": 1.5}, "units"),
        ({**VALID, "units": "5"}, "units"),
        ({**VALID, "units": None}, "units"),
        ({**VALID, "units": -1}, "units"),
        ({**VALID, "units": 2**63}, "units"),
        ({**VALID, "metric": 7}, "metric"),
        ({**VALID, "metric": ""}, "metric"),
        ({**VALID, "metric": None}, "metric"),
        ({**VALID, "extra": 1}, "extra"),
        ({**VALID, "idempotencyKey": "x"}, "idempotencyKey"),
    ],
)
def test_validation_errors_name_the_field(
    gw: GatewayHandle, http: httpx.Client, body: dict[str, Any], field: str
) -> None:
    r = post_log(http, gw, body)
    assert r.status_code == 400
    err = r.json()
    assert err["code"] == "VALIDATION_ERROR"
    assert err["details"] == {"field": field}
    assert err["message"]
    assert gw.client.log() == []


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b'"str"', b"", b"\xff\xfe", b"null"])
def test_body_not_a_json_object_is_400(gw: GatewayHandle, http: httpx.Client, raw: bytes) -> None:
    r = http.post(
        gw.billing_url,
        content=raw,
        headers={"X-Aerostack-Key": KEY, "content-type": "application/json"},
    )
    assert r.status_code == 400
    assert r.json()["details"] == {"field": "body"}
    assert gw.client.stats()["rejected_validation"] == 1


def test_largest_valid_units_accepted(gw: GatewayHandle, http: httpx.Client) -> None:
    r = post_log(http, gw, {**VALID, "units": 2**63 - 1})
    assert r.status_code == 200
    assert gw.client.totals()[0]["units"] == 2**63 - 1


def test_wrong_method_is_405(gw: GatewayHandle, http: httpx.Client) -> None:
    r = http.get(gw.billing_url)
    assert r.status_code == 405
    assert r.headers["allow"] == "POST"


def test_auth_checked_before_validation(gw: GatewayHandle, http: httpx.Client) -> None:
    assert post_log(http, gw, {"bad": True}, key=None).status_code == 401


def test_url_shape(gw: GatewayHandle) -> None:
    assert gw.url.startswith("http://127.0.0.1:")
    assert gw.url.endswith("/v1")
    assert gw.billing_url == gw.url + "/gateway/billing/log"
    assert gw.port > 0


def _non_loopback_ip() -> str | None:
    import socket

    for target in ("10.255.255.255", "192.0.2.1"):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.connect((target, 1))  # no packet is sent: this only picks the outgoing interface
            ip = str(s.getsockname()[0])
        except OSError:
            continue
        finally:
            s.close()
        if not ip.startswith("127."):
            return ip
    return None


def test_a_non_loopback_bind_needs_a_key_and_controls_need_their_own_token() -> None:
    import httpx
    import pytest as _pytest

    from aerostack_meter.servers import start_gateway

    ip = _non_loopback_ip()
    if ip is None:
        _pytest.skip("no non-loopback interface on this machine")
    with _pytest.raises(ValueError, match="without --key"):
        start_gateway(host=ip)
    with start_gateway(host=ip, keys=["k_secret"], control_token="ctl_token") as gw:
        root = gw.url.removesuffix("/v1")
        assert httpx.get(root + "/_emulator/health", timeout=5).status_code == 200  # reads: open
        assert httpx.post(root + "/_emulator/reset", timeout=5).status_code == 403
        assert httpx.post(root + "/_emulator/faults", json={"fail_rate": 1.0}, timeout=5).status_code == 403
        assert httpx.post(root + "/_emulator/reset", headers={"X-Emulator-Token": "wrong"},
                          timeout=5).status_code == 403
        assert httpx.post(root + "/_emulator/reset", headers={"X-Emulator-Token": "ctl_token"},
                          timeout=5).status_code == 200
        gw.client.set_faults(fail_rate=0.0)  # the handle's own client carries the token
    with start_gateway(host=ip, keys=["k_secret"]) as gw:  # no token: controls stay closed
        root = gw.url.removesuffix("/v1")
        assert httpx.post(root + "/_emulator/reset", timeout=5).status_code == 403
