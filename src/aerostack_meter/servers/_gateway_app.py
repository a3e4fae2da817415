"""The gateway emulator's ASGI app: the billing endpoint (raw ASGI, lean) and `/_emulator/*`.

Faults apply to the billing endpoint only; the control endpoints are plain Starlette routes.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .._usage_query import usage_view
from ._asgi import BodyTooLarge, drop_response, header, json_bytes, read_body, send_bytes, send_json
from ._faults import Fault, FaultConfig, FaultConfigError, FaultState
from ._gateway_db import EmptyWalletPolicy, GatewayDB
from ._runner import Closing, Receive, Scope, Send, mark_intentional_drop
from ._validation import ValidationFailure, parse_billing_body

__all__ = ["BILLING_PATH", "GatewayApp"]

BILLING_PATH = "/v1/gateway/billing/log"

_ERROR_CODES = {
    400: "VALIDATION_ERROR",
    401: "AUTH_INVALID_KEY",
    402: "INSUFFICIENT_BALANCE",
    403: "FORBIDDEN",
    429: "RATE_LIMIT_EXCEEDED",
}
_HUGE_CHUNK = b'{"pad":"' + b"x" * (64 * 1024 - 8)
_BAD_BODIES: dict[str, tuple[bytes, bytes]] = {
    "html": (
        b"text/html; charset=utf-8",
        b"<html><body><h1>Welcome</h1><p>Not an API.</p></body></html>",
    ),
    "invalid_json": (b"application/json", b'{"success": tru'),
    "empty": (b"application/json", b""),
}


def _error(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "details": details or {}}


class GatewayApp:
    """ASGI callable for one emulator instance."""

    def __init__(
        self,
        db: GatewayDB,
        *,
        keys: Sequence[str] | None,
        on_empty_wallet: EmptyWalletPolicy,
        faults: FaultState,
        closing: Closing,
        control_token: str | None = None,
        require_token: bool = False,
    ) -> None:
        self.db = db
        self._control_token = control_token
        self._require_token = require_token
        self.keys = frozenset(keys) if keys is not None else None
        self.on_empty_wallet = on_empty_wallet
        self.faults = faults
        self.closing = closing
        self.stats: Counter[str] = Counter()
        self.fault_stats: Counter[str] = Counter()
        self._control = Starlette(routes=self._routes())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == BILLING_PATH:
            await self._billing(scope, receive, send)
        elif self._require_token and scope["type"] == "http" and not self._may_control(scope):
            await send_json(send, 403, _error("FORBIDDEN", "the emulator's control endpoints need "
                                              "X-Emulator-Token off loopback"))
        else:
            await self._control(scope, receive, send)

    def _may_control(self, scope: Scope) -> bool:
        """Off loopback: reads are open, changes (faults, reset, wallets) need the control token."""
        import hmac

        if scope["method"] in ("GET", "HEAD"):
            return True
        if not self._control_token:
            return False
        given = header(scope, b"x-emulator-token") or ""
        return hmac.compare_digest(given.encode(), self._control_token.encode())

    # -- the billing endpoint -------------------------------------------------------------------

    async def _billing(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.stats["requests"] += 1
        if scope["method"] != "POST":
            self.stats["rejected_method"] += 1
            await send_json(
                send, 405, _error("VALIDATION_ERROR", "method not allowed"), [(b"allow", b"POST")]
            )
            return
        try:
            raw = await read_body(receive)
        except BodyTooLarge:
            self.stats["rejected_validation"] += 1
            await send_json(
                send, 413, _error("VALIDATION_ERROR", "request body too large", {"field": "body"})
            )
            return

        latency = self.faults.config.latency_ms
        if latency > 0:
            self.fault_stats["latency"] += 1
            if not await self.closing.sleep(latency / 1000):
                return await _abandon(send)

        fault = self.faults.before()
        if fault is not None:
            await self._inject(fault, send, scope, receive)
            return

        key = header(scope, b"x-aerostack-key")
        if not key or (self.keys is not None and key not in self.keys):
            self.stats["rejected_auth"] += 1
            message = "missing API key" if not key else "invalid API key"
            await send_json(send, 401, _error("AUTH_INVALID_KEY", message))
            return
        try:
            event = parse_billing_body(raw)
        except ValidationFailure as exc:
            self.stats["rejected_validation"] += 1
            await send_json(
                send, 400, _error("VALIDATION_ERROR", exc.message, {"field": exc.field})
            )
            return

        outcome = self.db.log(
            consumer_id=event.consumer_id,
            api_id=event.api_id,
            metric=event.metric,
            units=event.units,
            idempotency_key=header(scope, b"idempotency-key"),
            on_empty_wallet=self.on_empty_wallet,
        )
        if not outcome.logged:
            self.stats["rejected_balance"] += 1
            await send_json(
                send,
                402,
                _error(
                    "INSUFFICIENT_BALANCE",
                    "insufficient wallet balance",
                    {
                        "consumerId": event.consumer_id,
                        "balance": outcome.balance,
                        "units": event.units,
                    },
                ),
            )
            return
        self.stats["ok"] += 1
        body = json_bytes({"success": True, "loggedUnits": event.units})
        after = self.faults.after_commit()
        if after is None:
            await send_bytes(send, 200, body)
        elif after.kind == "lose_response":
            self.fault_stats["lose_response"] += 1
            if after.detail == "delay":
                delay = self.faults.config.lose_response_delay_ms / 1000
                if await self.closing.sleep(delay):
                    await send_bytes(send, 200, body)
                    return
                return await _abandon(send)
            await drop_response(send, 200, body)
        else:
            await self._inject(after, send, scope, receive)

    async def _inject(self, fault: Fault, send: Send, scope: Scope, receive: Receive) -> None:
        if fault.kind == "hang":
            self.fault_stats["hang"] += 1
            await self.closing.wait()
            await _abandon(send)
        elif fault.kind == "rate_limit":
            self.fault_stats["rate_limit"] += 1
            retry_after = str(self.faults.config.retry_after).encode()
            await send_json(
                send,
                429,
                _error("RATE_LIMIT_EXCEEDED", "rate limit exceeded", {"injected": True}),
                [(b"retry-after", retry_after)],
            )
        elif fault.kind == "fail":
            self.fault_stats["fail"] += 1
            self.fault_stats[f"fail_{fault.status}"] += 1
            code = _ERROR_CODES.get(fault.status, "INTERNAL_ERROR")
            await send_json(
                send,
                fault.status,
                _error(code, f"injected failure {fault.status}", {"injected": True}),
            )
        elif fault.kind == "drop":
            self.fault_stats["drop"] += 1
            await drop_response(send, 200, json_bytes({"success": True, "loggedUnits": 0}))
        else:  # bad_body
            self.fault_stats[f"bad_body_{fault.detail}"] += 1
            if fault.detail == "huge":
                await self._send_huge(send, receive)
            else:
                content_type, body = _BAD_BODIES[fault.detail]
                await send_bytes(send, 200, body, content_type=content_type)

    async def _send_huge(self, send: Send, receive: Receive) -> None:
        """Stream ``huge_bytes`` until done, the server closes, or the client hangs up (it reads
        at most 64 KiB). The request body was read: the next message is ``http.disconnect``."""
        remaining = self.faults.config.huge_bytes
        hung_up = asyncio.ensure_future(receive())
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            while remaining > 0:
                if self.closing.closed:
                    mark_intentional_drop()
                    return
                # A send to an unpaused transport never suspends: yield, so a lost connection
                # is noticed (else every write to the dead socket is logged by asyncio).
                await asyncio.sleep(0)
                if hung_up.done():
                    return
                chunk = _HUGE_CHUNK[:remaining]
                remaining -= len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": remaining > 0})
        finally:
            hung_up.cancel()

    # -- control endpoints ----------------------------------------------------------------------

    def _routes(self) -> list[Route]:
        return [
            Route("/v1/gateway/billing/balance", self._balance, methods=["GET"]),
            Route("/_emulator/health", self._health, methods=["GET"]),
            Route("/_emulator/totals", self._totals, methods=["GET"]),
            Route("/_emulator/log", self._log, methods=["GET"]),
            Route("/_emulator/duplicates", self._duplicates, methods=["GET"]),
            Route("/_emulator/wallets", self._wallets, methods=["GET", "POST"]),
            Route("/_emulator/reset", self._reset, methods=["POST"]),
            Route("/_emulator/faults", self._faults, methods=["GET", "POST"]),
            Route("/_emulator/stats", self._stats, methods=["GET"]),
            Route("/_emulator/usage/{view}", self._usage, methods=["GET"]),
        ]

    async def _balance(self, request: Request) -> Response:
        """An emulator extension (not in the published API): a consumer's wallet balance, read
        with the billing key. ``balance`` is ``null`` for a consumer with no wallet (unlimited)."""
        key = request.headers.get("x-aerostack-key")
        if not key or (self.keys is not None and key not in self.keys):
            return JSONResponse(_error("AUTH_INVALID_KEY", "invalid API key"), 401)
        consumer_id = request.query_params.get("consumerId", "")
        if not consumer_id.strip():
            return JSONResponse(_error("VALIDATION_ERROR", "consumerId is required",
                                       {"field": "consumerId"}), 400)
        self.stats["balance_reads"] += 1
        balance = self.db.wallets().get(consumer_id)
        return JSONResponse({"consumerId": consumer_id, "balance": balance})

    async def _health(self, request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def _totals(self, request: Request) -> Response:
        by = request.query_params.get("by", "")
        if by not in ("", "consumer", "api", "metric"):
            return JSONResponse(
                _error("VALIDATION_ERROR", "by must be consumer, api or metric", {"field": "by"}),
                400,
            )
        return JSONResponse({"rows": self.db.totals(by)})

    async def _usage(self, request: Request) -> Response:
        """The dashboard's aggregates over the billing log (`usage_view`; 200 rows only)."""
        try:
            body = usage_view(
                self.db.usage_store(), request.path_params["view"], request.query_params
            )
        except ValueError as exc:
            return JSONResponse(_error("VALIDATION_ERROR", str(exc)), 400)
        return JSONResponse(body)

    async def _log(self, request: Request) -> Response:
        try:
            limit_raw = request.query_params.get("limit")
            limit = int(limit_raw) if limit_raw is not None else None
            after_id = int(request.query_params.get("after_id", "0"))
        except ValueError:
            return JSONResponse(
                _error("VALIDATION_ERROR", "limit and after_id must be integers"), 400
            )
        return JSONResponse({"rows": self.db.log_rows(limit=limit, after_id=after_id)})

    async def _duplicates(self, request: Request) -> Response:
        return JSONResponse({"rows": self.db.duplicates()})

    async def _wallets(self, request: Request) -> Response:
        if request.method == "POST":
            data = await _json_object(request)
            if data is None or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in data.values()
            ):
                return JSONResponse(
                    _error("VALIDATION_ERROR", "body must map consumer ids to integer balances"),
                    400,
                )
            self.db.set_wallets(data)
        return JSONResponse({"wallets": self.db.wallets()})

    async def _reset(self, request: Request) -> Response:
        self.db.reset_log()
        self.stats.clear()
        self.fault_stats.clear()
        return JSONResponse({"ok": True})

    async def _faults(self, request: Request) -> Response:
        if request.method == "POST":
            data = await _json_object(request)
            if data is None:
                return JSONResponse(_error("VALIDATION_ERROR", "body must be a JSON object"), 400)
            try:
                self.faults.replace(FaultConfig.from_dict(data))
            except (FaultConfigError, TypeError) as exc:
                return JSONResponse(_error("VALIDATION_ERROR", str(exc)), 400)
        return JSONResponse({"faults": self.faults.snapshot()})

    async def _stats(self, request: Request) -> Response:
        keys = (
            "requests",
            "ok",
            "rejected_auth",
            "rejected_validation",
            "rejected_balance",
            "rejected_method",
        )
        out: dict[str, Any] = {k: self.stats.get(k, 0) for k in keys}
        out["injected_fault"] = dict(sorted(self.fault_stats.items()))
        return JSONResponse(out)


async def _json_object(request: Request) -> dict[str, Any] | None:
    try:
        data = json.loads(await request.body() or b"{}")
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


async def _abandon(send: Send) -> None:
    """Give up on a response because the server is stopping (the connection is closed)."""
    mark_intentional_drop()
