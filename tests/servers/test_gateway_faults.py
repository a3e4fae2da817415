"""Every fault mode of the gateway emulator, seen from a plain httpx client."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from aerostack_meter.servers import GatewayHandle, start_gateway

from ._helpers import KEY, post_log


def test_fail_next_then_success(gw: GatewayHandle, http: httpx.Client) -> None:
    gw.client.set_faults(fail_next=2, fail_status=503)
    r1, r2, r3 = (post_log(http, gw) for _ in range(3))
    assert [r1.status_code, r2.status_code, r3.status_code] == [503, 503, 200]
    assert r1.json()["code"] == "INTERNAL_ERROR"
    assert r1.json()["details"] == {"injected": True}
    assert gw.client.totals_by_consumer() == {"usr_1": 5}
    stats = gw.client.stats()
    assert stats["injected_fault"]["fail"] == 2
    assert stats["injected_fault"]["fail_503"] == 2
    assert gw.client.faults()["fail_next"] == 0


@pytest.mark.parametrize(
    ("status", "code"), [(400, "VALIDATION_ERROR"), (403, "FORBIDDEN"), (502, "INTERNAL_ERROR")]
)
def test_fail_status_error_codes(
    gw: GatewayHandle, http: httpx.Client, status: int, code: str
) -> None:
    gw.client.set_faults(fail_next=1, fail_status=status)
    r = post_log(http, gw)
    assert r.status_code == status
    assert r.json()["code"] == code


def test_fail_rate_is_seeded_and_uses_fail_statuses(gw: GatewayHandle, http: httpx.Client) -> None:
    def run() -> list[int]:
        gw.client.set_faults(fail_rate=0.5, fail_statuses=[500, 502], seed=7)
        return [post_log(http, gw).status_code for _ in range(40)]

    first, second = run(), run()
    assert first == second  # same seed, same sequence
    assert set(first) == {200, 500, 502}
    ok = first.count(200)
    assert 5 < ok < 35
    gw.client.set_faults(fail_rate=1.0)
    assert all(post_log(http, gw).status_code in (500, 502, 503) for _ in range(5))


def test_rate_limit_next_sends_retry_after(gw: GatewayHandle, http: httpx.Client) -> None:
    gw.client.set_faults(rate_limit_next=1, retry_after=3)
    r = post_log(http, gw)
    assert r.status_code == 429
    assert r.headers["retry-after"] == "3"
    assert r.json()["code"] == "RATE_LIMIT_EXCEEDED"
    assert post_log(http, gw).status_code == 200
    assert gw.client.stats()["injected_fault"]["rate_limit"] == 1


def test_latency(gw: GatewayHandle, http: httpx.Client) -> None:
    gw.client.set_faults(latency_ms=150)
    start = time.perf_counter()
    assert post_log(http, gw).status_code == 200
    assert time.perf_counter() - start >= 0.14
    with pytest.raises(httpx.ReadTimeout):
        post_log(http, gw, timeout=0.05)
    # the server still processes the request the client gave up on
    _wait_for(lambda: gw.client.stats()["ok"] == 2)
    assert gw.client.stats()["injected_fault"]["latency"] == 2


def test_drop_next_breaks_the_response_and_logs_nothing(
    gw: GatewayHandle, http: httpx.Client
) -> None:
    gw.client.set_faults(drop_next=1)
    with pytest.raises(httpx.RemoteProtocolError):
        post_log(http, gw)
    assert gw.client.log() == []
    assert post_log(http, gw).status_code == 200
    assert gw.client.stats()["injected_fault"]["drop"] == 1


def test_drop_rate(gw: GatewayHandle, http: httpx.Client) -> None:
    gw.client.set_faults(drop_rate=1.0)
    for _ in range(3):
        with pytest.raises(httpx.RemoteProtocolError):
            post_log(http, gw)
    assert gw.client.stats()["injected_fault"]["drop"] == 3
    assert gw.client.log() == []


def test_lose_response_drop_commits_the_log(gw: GatewayHandle, http: httpx.Client) -> None:
    gw.client.set_faults(lose_response_next=1)
    with pytest.raises(httpx.RemoteProtocolError):
        post_log(http, gw, idem="amb-1")
    # the ambiguous case: the client saw an error but the event was logged; a retry duplicates it
    assert post_log(http, gw, idem="amb-1").status_code == 200
    assert gw.client.duplicates() == {"amb-1": 2}
    stats = gw.client.stats()
    assert stats["ok"] == 2
    assert stats["injected_fault"]["lose_response"] == 1


def test_lose_response_rate(gw: GatewayHandle, http: httpx.Client) -> None:
    gw.client.set_faults(lose_response_rate=1.0)
    with pytest.raises(httpx.RemoteProtocolError):
        post_log(http, gw)
    assert gw.client.totals_by_consumer() == {"usr_1": 5}


def test_lose_response_delay_mode(gw: GatewayHandle, http: httpx.Client) -> None:
    gw.client.set_faults(
        lose_response_next=2, lose_response_mode="delay", lose_response_delay_ms=300
    )
    with pytest.raises(httpx.ReadTimeout):
        post_log(http, gw, timeout=0.1)
    assert gw.client.totals_by_consumer() == {"usr_1": 5}  # committed before the delay
    time.sleep(0.3)  # let the abandoned response finish
    # a patient client gets the 200 after the delay
    start = time.perf_counter()
    assert post_log(http, gw, timeout=5).json() == {"success": True, "loggedUnits": 5}
    assert time.perf_counter() - start >= 0.28


@pytest.mark.parametrize(
    ("mode", "content_type", "body"),
    [
        ("html", "text/html", b"<html>"),
        ("invalid_json", "application/json", b'{"success": tru'),
        ("empty", "application/json", b""),
    ],
)
def test_bad_body_modes(
    gw: GatewayHandle, http: httpx.Client, mode: str, content_type: str, body: bytes
) -> None:
    gw.client.set_faults(bad_body=mode)
    r = post_log(http, gw)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith(content_type)
    assert r.content.startswith(body) if body else r.content == b""
    with pytest.raises(ValueError):
        r.json()
    assert gw.client.log() == []  # not processed by default
    assert gw.client.stats()["injected_fault"][f"bad_body_{mode}"] == 1


def test_bad_body_commits(gw: GatewayHandle, http: httpx.Client) -> None:
    gw.client.set_faults(bad_body="html", bad_body_commits=True)
    r = post_log(http, gw)
    assert r.headers["content-type"].startswith("text/html")
    assert gw.client.totals_by_consumer() == {"usr_1": 5}
    # requests that fail auth still get the normal 401
    assert post_log(http, gw, key="nope").status_code == 401


def test_bad_body_huge_is_streamed(gw: GatewayHandle) -> None:
    gw.client.set_faults(bad_body="huge", huge_bytes=3 * 1024 * 1024 + 5)
    received = 0
    with (
        httpx.Client(timeout=10) as c,
        c.stream(
            "POST",
            gw.billing_url,
            json={"consumerId": "u", "apiId": "a", "units": 1},
            headers={"X-Aerostack-Key": KEY},
        ) as r,
    ):
        assert r.status_code == 200
        assert "content-length" not in r.headers
        for chunk in r.iter_bytes():
            received += len(chunk)
    assert received == 3 * 1024 * 1024 + 5


def test_bad_body_huge_default_is_50_mb(gw: GatewayHandle) -> None:
    assert gw.client.set_faults(bad_body="huge")["huge_bytes"] == 50 * 1024 * 1024


def test_hang_until_timeout_and_stop_is_not_blocked(http: httpx.Client) -> None:
    gw = start_gateway(faults={"bad_body": "hang"})
    try:
        with pytest.raises(httpx.ReadTimeout):
            post_log(http, gw, key="k", timeout=0.2)
        assert gw.client.stats()["injected_fault"]["hang"] == 1
        # a request still hanging when the server stops gets an error, not a hang
        errors: list[BaseException] = []

        def hanging() -> None:
            try:
                with httpx.Client(timeout=10) as c:
                    post_log(c, gw, key="k")
            except BaseException as exc:
                errors.append(exc)

        t = threading.Thread(target=hanging)
        t.start()
        time.sleep(0.2)
    finally:
        start = time.perf_counter()
        gw.stop()
        stop_time = time.perf_counter() - start
    t.join(5)
    assert not t.is_alive()
    assert stop_time < 2.0


def test_faults_apply_only_to_billing(gw: GatewayHandle, http: httpx.Client) -> None:
    gw.client.set_faults(drop_rate=1.0, latency_ms=500)
    start = time.perf_counter()
    assert gw.client.stats()["requests"] == 0
    assert time.perf_counter() - start < 0.4


def test_faults_changed_mid_run_while_a_client_sends(gw: GatewayHandle) -> None:
    statuses: list[int] = []
    stop = threading.Event()

    def sender() -> None:
        with httpx.Client(timeout=5) as c:
            while not stop.is_set() and len(statuses) < 2000:
                statuses.append(post_log(c, gw).status_code)

    t = threading.Thread(target=sender)
    t.start()
    try:
        _wait_for(lambda: len(statuses) >= 20)
        gw.client.set_faults(fail_rate=1.0, fail_statuses=[503])
        mark = len(statuses)
        _wait_for(lambda: statuses[-1] == 503 and len(statuses) > mark + 20)
        gw.client.set_faults()
        mark = len(statuses)
        _wait_for(lambda: len(statuses) > mark + 20 and statuses[-1] == 200)
    finally:
        stop.set()
        t.join(5)
    assert statuses[0] == 200
    assert 503 in statuses
    assert statuses[-1] == 200
    stats = gw.client.stats()
    assert stats["injected_fault"]["fail"] == statuses.count(503)
    assert stats["ok"] == statuses.count(200)


def test_fault_config_is_validated(gw: GatewayHandle) -> None:
    for bad in (
        {"fail_rate": 2},
        {"fail_next": -1},
        {"bad_body": "weird"},
        {"nope": 1},
        {"fail_statuses": [200]},
        {"retry_after": 1.5},
        {"drop_rate": True},
    ):
        with pytest.raises(httpx.HTTPStatusError) as info:
            gw.client.set_faults(**bad)
        assert info.value.response.status_code == 400
    with pytest.raises(ValueError):
        start_gateway(faults={"fail_rate": -0.1})


def test_faults_from_start_arguments(http: httpx.Client) -> None:
    with start_gateway(faults={"rate_limit_next": 1}) as gw:
        assert post_log(http, gw, key="k").status_code == 429
        assert post_log(http, gw, key="k").status_code == 200


def _wait_for(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.01)
    raise AssertionError("condition not reached in time")
