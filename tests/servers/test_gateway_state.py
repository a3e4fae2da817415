"""Wallets, read endpoints, reset, stats, and restarting on the same database."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest

from aerostack_meter.servers import GatewayClient, GatewayHandle, start_gateway

from ._helpers import post_log


def _send(
    http: httpx.Client,
    gw: GatewayHandle,
    consumer: str,
    units: int,
    api: str = "api_1",
    metric: str = "tokens",
    idem: str | None = None,
) -> httpx.Response:
    return post_log(
        http,
        gw,
        {"consumerId": consumer, "apiId": api, "units": units, "metric": metric},
        idem=idem,
    )


def test_wallet_reject_mode(http: httpx.Client) -> None:
    with start_gateway(wallets={"usr_w": 10}, on_empty_wallet="reject") as gw:
        assert _send(http, gw, "usr_w", 6).status_code == 200
        assert gw.client.wallets() == {"usr_w": 4}
        r = _send(http, gw, "usr_w", 5)
        assert r.status_code == 402
        assert r.json()["code"] == "INSUFFICIENT_BALANCE"
        assert r.json()["details"]["balance"] == 4
        assert gw.client.wallets() == {"usr_w": 4}
        assert _send(http, gw, "usr_w", 4).status_code == 200
        assert gw.client.wallets() == {"usr_w": 0}
        assert _send(http, gw, "usr_w", 0).status_code == 200
        assert _send(http, gw, "usr_w", 1).status_code == 402
        # consumers without a wallet are unlimited
        assert _send(http, gw, "usr_free", 10**9).status_code == 200
        assert gw.client.totals_by_consumer() == {"usr_free": 10**9, "usr_w": 10}
        assert gw.client.stats()["rejected_balance"] == 2


def test_wallet_allow_mode_goes_negative(http: httpx.Client) -> None:
    with start_gateway(wallets={"usr_w": 3}, on_empty_wallet="allow") as gw:
        assert _send(http, gw, "usr_w", 5).status_code == 200
        assert _send(http, gw, "usr_w", 5).status_code == 200
        assert gw.client.wallets() == {"usr_w": -7}
        assert gw.client.totals_by_consumer() == {"usr_w": 10}


def test_wallets_can_be_set_at_runtime(http: httpx.Client) -> None:
    with start_gateway() as gw:
        assert gw.client.set_wallets({"usr_x": 2}) == {"usr_x": 2}
        assert _send(http, gw, "usr_x", 3).status_code == 402


def test_bad_on_empty_wallet_value_rejected() -> None:
    with pytest.raises(ValueError, match="on_empty_wallet"):
        start_gateway(on_empty_wallet="maybe")


def test_totals_grouping(gw: GatewayHandle, http: httpx.Client) -> None:
    _send(http, gw, "u1", 10, "api_a", "input")
    _send(http, gw, "u1", 5, "api_a", "input")
    _send(http, gw, "u1", 7, "api_a", "output")
    _send(http, gw, "u2", 1, "api_b", "input")
    client: GatewayClient = gw.client
    assert client.totals() == [
        {"consumerId": "u1", "apiId": "api_a", "metric": "input", "units": 15, "requests": 2},
        {"consumerId": "u1", "apiId": "api_a", "metric": "output", "units": 7, "requests": 1},
        {"consumerId": "u2", "apiId": "api_b", "metric": "input", "units": 1, "requests": 1},
    ]
    assert client.totals(by="consumer") == [
        {"consumerId": "u1", "units": 22, "requests": 3},
        {"consumerId": "u2", "units": 1, "requests": 1},
    ]
    assert client.totals(by="api") == [
        {"apiId": "api_a", "units": 22, "requests": 3},
        {"apiId": "api_b", "units": 1, "requests": 1},
    ]
    assert client.totals(by="metric") == [
        {"metric": "input", "units": 16, "requests": 3},
        {"metric": "output", "units": 7, "requests": 1},
    ]
    assert client.totals_by_consumer() == {"u1": 22, "u2": 1}
    with pytest.raises(httpx.HTTPStatusError):
        client.totals(by="nonsense")


def test_log_paging_duplicates_and_reset(gw: GatewayHandle, http: httpx.Client) -> None:
    client: GatewayClient = gw.client
    _send(http, gw, "u1", 1, idem="a")
    _send(http, gw, "u1", 2, idem="a")
    _send(http, gw, "u1", 3, idem="a")
    _send(http, gw, "u1", 4, idem="b")
    _send(http, gw, "u1", 5)
    _send(http, gw, "u1", 6)
    rows = client.log()
    assert [r["units"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [r["idempotencyKey"] for r in rows] == ["a", "a", "a", "b", None, None]
    assert [r["units"] for r in client.log(limit=2, after_id=rows[1]["id"])] == [3, 4]
    assert client.duplicates() == {"a": 3}
    client.reset()
    assert client.log() == []
    assert client.totals() == []
    assert client.stats()["ok"] == 0


def test_stats_count_outcomes(gw: GatewayHandle, http: httpx.Client) -> None:
    client: GatewayClient = gw.client
    _send(http, gw, "u1", 1)
    post_log(http, gw, key="wrong")
    post_log(http, gw, {"consumerId": "u"})
    client.set_faults(fail_next=1)
    _send(http, gw, "u1", 1)
    stats = client.stats()
    assert stats["requests"] == 4
    assert stats["ok"] == 1
    assert stats["rejected_auth"] == 1
    assert stats["rejected_validation"] == 1
    assert stats["injected_fault"]["fail"] == 1


def test_control_endpoints_need_no_key_and_ignore_faults(
    gw: GatewayHandle, http: httpx.Client
) -> None:
    client: GatewayClient = gw.client
    client.set_faults(fail_rate=1.0, latency_ms=0, bad_body="hang")
    assert client.health() is True
    assert client.totals() == []
    assert client.faults()["bad_body"] == "hang"
    client.set_faults()


def test_restart_on_same_db_and_port_keeps_log_and_wallets(
    tmp_path: Path, http: httpx.Client
) -> None:
    db = str(tmp_path / "gw.db")
    with start_gateway(db_path=db, wallets={"usr_w": 100}) as gw:
        _send(http, gw, "usr_w", 30)
        port, url = gw.port, gw.url
        gw.restart()
        assert gw.port == port and gw.url == url
        assert gw.client.totals_by_consumer() == {"usr_w": 30}
        assert gw.client.wallets() == {"usr_w": 70}
        assert gw.client.stats()["requests"] == 0  # stats are per process run
        _send(http, gw, "usr_w", 10)
    # a fresh gateway on the same file and port (wallets not given: the db keeps them)
    with start_gateway(db_path=db, port=port) as gw2:
        assert gw2.url == url
        assert gw2.client.totals_by_consumer() == {"usr_w": 40}
        assert gw2.client.wallets() == {"usr_w": 60}
    assert Path(db).exists()


def test_temporary_db_is_removed_on_stop() -> None:
    gw = start_gateway()
    path = Path(gw.db_path)
    assert path.exists()
    gw.stop()
    gw.stop()  # idempotent
    assert not path.exists()


def test_concurrent_clients_all_logged(gw: GatewayHandle) -> None:
    client: GatewayClient = gw.client
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            with httpx.Client(timeout=5) as c:
                for i in range(50):
                    r = post_log(
                        c, gw, {"consumerId": f"u{n}", "apiId": "a", "units": 1}, idem=f"{n}-{i}"
                    )
                    assert r.status_code == 200
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert client.totals_by_consumer() == {f"u{n}": 50 for n in range(6)}
    assert client.duplicates() == {}
