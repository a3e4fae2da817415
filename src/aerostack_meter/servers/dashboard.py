"""A local usage dashboard over the ledger or a gateway emulator (`aerostack-meter dashboard`).

    with start_dashboard(ledger="aerostack-usage.db") as dash:
        print(dash.base_url)            # open it in a browser; the JSON API is under /api/

Needs the `dashboard` extra (starlette, uvicorn, plotly). See docs/dashboard.md.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence

from .._health import DeliveryHealth, HealthSource, SpoolHealth, StateDirHealth
from ._dashboard_app import DashboardApp
from ._dashboard_sources import GatewayUsage, LedgerUsage, UsageSource
from ._runner import ServerHandle, ServerThread

__all__ = ["DashboardHandle", "DeliveryHealth", "HealthSource", "is_loopback", "start_dashboard"]


def is_loopback(host: str) -> bool:
    """True for `localhost` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class DashboardHandle(ServerHandle):
    """A running dashboard: `base_url` is the page; `stop()` or use it as a context manager."""

    def __init__(self, app: DashboardApp, host: str, port: int) -> None:
        self.app = app
        self._host = host
        self._server: ServerThread | None = None
        self._server = ServerThread(app, host=host, port=port, name="aerostack-dashboard").start()
        self.port = self._server.port

    @property
    def url(self) -> str:
        """The page's URL (with the token, if one is set)."""
        token = self.app.token
        return f"{self.base_url}/" + (f"?token={token}" if token else "")

    def stop(self) -> None:
        self._stop_server()
        self.app.source.close()

    def __repr__(self) -> str:
        return f"<DashboardHandle {self.base_url} source={self.app.source.name!r}>"


def start_dashboard(
    *,
    ledger: str | os.PathLike[str] | None = None,
    gateway: str | None = None,
    state_dir: str | os.PathLike[str] | None = None,
    spool: str | os.PathLike[str] | None = None,
    redis: str | None = None,
    health: Sequence[HealthSource] = (),
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    refresh_seconds: float = 5.0,
) -> DashboardHandle:
    """Serve the dashboard in a background thread and return its handle.

    The usage comes from `gateway` (a running emulator's URL) or else `ledger` (a ledger file, or
    an emulator's database file; default `$AEROSTACK_METER_LEDGER` or `./aerostack-usage.db`).
    Delivery health comes from the source itself (its last delivery), `state_dir` (every spool
    file in it), `spool` (one spool file), `redis` (a Redis stream URL, as given to the relay:
    its backlog, dead letters and the relays' counters; needs the `relay` extra) and any extra
    `health` sources. A `host` other than
    loopback needs a `token` (ValueError otherwise); `port=0` picks a free port. The page refreshes
    itself every `refresh_seconds` (0: never). FileNotFoundError if the ledger does not exist.
    """
    if ledger is not None and gateway is not None:
        raise ValueError("give a ledger or a gateway, not both")
    if not is_loopback(host) and not token:
        raise ValueError(f"listening on {host} (not loopback) needs a token (--token)")
    source: UsageSource
    if gateway is not None:
        source = GatewayUsage(gateway)
    else:
        from .._report import default_ledger_path

        source = LedgerUsage(ledger if ledger is not None else default_ledger_path())
    sources: list[HealthSource] = []
    if state_dir is not None:
        sources.append(StateDirHealth(state_dir))
    if spool is not None:
        sources.append(SpoolHealth(spool))
    if redis is not None:
        from ..relay import RelayHealth

        sources.append(RelayHealth(redis))
    sources.extend(health)
    try:
        app = DashboardApp(source, sources, token=token, refresh_seconds=refresh_seconds)
        return DashboardHandle(app, host, port)
    except BaseException:
        source.close()
        raise
