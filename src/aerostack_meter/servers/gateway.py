"""A local emulator of the Aerostack Gateway billing API (`POST /v1/gateway/billing/log`).

    with start_gateway(keys=["ac_secret_test"], wallets={"usr_1": 1000}) as gw:
        ...  # point the meter at gw.url
        assert gw.client.totals_by_consumer() == {"usr_1": 42}

See docs/servers.md for the endpoints, the fault settings and the wallet rules.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

from ._faults import FaultConfig, FaultState
from ._gateway_app import GatewayApp
from ._gateway_client import GatewayClient
from ._gateway_db import EmptyWalletPolicy, GatewayDB
from ._runner import Closing, ServerHandle, ServerThread

__all__ = ["GatewayClient", "GatewayHandle", "start_gateway"]


class GatewayHandle(ServerHandle):
    """A running gateway emulator: `url` ends in `/v1`; `stop()` or use it as a context manager."""

    def __init__(
        self,
        *,
        keys: Sequence[str] | None,
        db_path: str | None,
        host: str,
        port: int,
        wallets: Mapping[str, int] | None,
        on_empty_wallet: EmptyWalletPolicy,
        faults: FaultConfig | Mapping[str, Any] | None,
        control_token: str | None = None,
    ) -> None:
        if on_empty_wallet not in ("reject", "allow"):
            raise ValueError("on_empty_wallet must be 'reject' or 'allow'")
        self._tmpdir: str | None = None
        if db_path is None:
            self._tmpdir = tempfile.mkdtemp(prefix="aerostack-gateway-")
            db_path = os.path.join(self._tmpdir, "gateway.db")
        self.db_path = db_path
        self._keys = list(keys) if keys is not None else None
        loopback = _is_loopback_host(host)
        if not loopback and not keys:
            raise ValueError(f"refusing to listen on {host} (not loopback) without --key: anyone "
                             "who can reach it could log usage")
        self._host = host
        # Off loopback, the control endpoints (faults, reset, wallets) need their own token.
        self._control_token = control_token if not loopback else None
        self._require_token = not loopback
        self._on_empty_wallet: EmptyWalletPolicy = on_empty_wallet
        self._faults_config = _to_config(faults)
        self._wallets = dict(wallets) if wallets is not None else None
        self._client: GatewayClient | None = None
        self._server: ServerThread | None = None
        self._db: GatewayDB | None = None
        self.app: GatewayApp | None = None
        self.port = port
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        db = GatewayDB(self.db_path)
        try:
            if self._wallets:
                db.set_wallets(self._wallets)
            closing = Closing()
            faults = FaultState(FaultConfig.from_dict(self._faults_config.to_dict()))
            self.app = GatewayApp(
                db,
                keys=self._keys,
                on_empty_wallet=self._on_empty_wallet,
                faults=faults,
                closing=closing,
                control_token=self._control_token,
                require_token=self._require_token,
            )
            self._server = ServerThread(
                self.app, host=self._host, port=self.port, closing=closing, name="aerostack-gateway"
            ).start()
        except BaseException:
            db.close()
            raise
        self._db = db
        self.port = self._server.port

    # `base_url` is the server root (the control endpoints live there); `url` is the API base
    # URL to give a billing client.

    @property
    def billing_url(self) -> str:
        return f"{self.url}/gateway/billing/log"

    @property
    def client(self) -> GatewayClient:
        if self._client is None:
            self._client = GatewayClient(self.url, control_token=self._control_token)
        return self._client

    @property
    def running(self) -> bool:
        return self._server is not None

    def _shutdown(self) -> None:
        self._stop_server()
        if self._db is not None:
            self._db.close()
            self._db = None

    def restart(self) -> None:
        """Stop and start again on the same port and database (stats and faults start afresh;
        the log and the wallets persist in the database)."""
        self._shutdown()
        self._wallets = None  # the database keeps the balances
        self._start()

    def stop(self) -> None:
        """Stop the server; a temporary database is deleted. Idempotent."""
        self._shutdown()
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __repr__(self) -> str:
        return f"<GatewayHandle {self.url} db={self.db_path!r}>"


def _to_config(faults: FaultConfig | Mapping[str, Any] | None) -> FaultConfig:
    if faults is None:
        return FaultConfig()
    if isinstance(faults, FaultConfig):
        faults.validate()
        return faults
    return FaultConfig.from_dict(dict(faults))


def start_gateway(
    *,
    keys: Sequence[str] | None = None,
    db_path: str | None = None,
    port: int = 0,
    wallets: Mapping[str, int] | None = None,
    on_empty_wallet: EmptyWalletPolicy = "reject",
    faults: FaultConfig | Mapping[str, Any] | None = None,
    host: str = "127.0.0.1",
    control_token: str | None = None,
) -> GatewayHandle:
    """Start a gateway emulator in a background thread and return its handle.

    `keys=None` accepts any non-empty `X-Aerostack-Key`; a list accepts only those keys.
    `db_path=None` uses a temporary SQLite file removed by `stop()`; a path persists, so a
    gateway can be restarted on it. `port=0` picks a free port. `wallets` sets balances
    (consumers without one are unlimited); `on_empty_wallet` is "reject" (402, nothing logged)
    or "allow" (logged, the balance goes negative). `faults` is a `FaultConfig` or its dict.

    A `host` that is not loopback needs `keys` (`ValueError` otherwise), and there the control
    endpoints that change state (`/_emulator/faults`, `/reset`, `/wallets` POST) answer 403 unless
    the request carries `X-Emulator-Token: <control_token>` (without a token they stay closed).
    """
    return GatewayHandle(
        keys=keys,
        db_path=db_path,
        host=host,
        port=port,
        wallets=wallets,
        on_empty_wallet=on_empty_wallet,
        faults=faults,
        control_token=control_token,
    )


def _is_loopback_host(host: str) -> bool:
    import ipaddress

    if host in ("localhost", "localhost.localdomain") or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
