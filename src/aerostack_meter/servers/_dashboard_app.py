"""The dashboard's ASGI app: the page, its assets (served from the package, no CDN) and `/api/*`.

    GET /                       the page (filters in the URL query: consumer, api, metric, range)
    GET /assets/<name>          dashboard.js, dashboard.css, plotly.min.js
    GET /api/summary|series|top|options   `usage_view` over the usage source
    GET /api/health             every delivery-health source, and their sum
    GET /api/overview           all of the above for the page's filters, in one request

With a token, every `/api/*` request needs `Authorization: Bearer <token>` (or `?token=`).
"""

from __future__ import annotations

import hmac
import importlib.resources
from collections.abc import Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .._health import HealthSource, combine
from ._dashboard_sources import SourceError, UsageSource

__all__ = ["DashboardApp", "plotly_js"]

_STATIC = importlib.resources.files("aerostack_meter.servers") / "dashboard_static"
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".html": "text/html; charset=utf-8"}
_NO_STORE = {"cache-control": "no-store"}


def plotly_js() -> bytes:
    """plotly.js, minified, as shipped inside the `plotly` Python package (the `dashboard`
    extra): the dashboard serves it itself, so the page needs no network."""
    try:
        files = importlib.resources.files("plotly")
    except ModuleNotFoundError:
        raise RuntimeError(
            "the dashboard needs plotly: pip install 'aerostack-meter[dashboard]'"
        ) from None
    return (files / "package_data" / "plotly.min.js").read_bytes()


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, "details": {}}, status,
                        headers=_NO_STORE)


class DashboardApp:
    """The dashboard for one usage source and any number of health sources."""

    def __init__(self, source: UsageSource, health: Sequence[HealthSource] = (),
                 *, token: str | None = None, refresh_seconds: float = 5.0) -> None:
        self.source = source
        self.health_sources = [source.health(), *health]
        self.token = token
        self.refresh_seconds = refresh_seconds
        self._assets: dict[str, bytes] = {"plotly.min.js": plotly_js()}
        for name in ("dashboard.js", "dashboard.css", "index.html"):
            self._assets[name] = (_STATIC / name).read_bytes()
        self._app = Starlette(routes=[
            Route("/", self._index, methods=["GET"]),
            Route("/assets/{name}", self._asset, methods=["GET"]),
            Route("/api/health", self._health, methods=["GET"]),
            Route("/api/overview", self._overview, methods=["GET"]),
            Route("/api/{view}", self._view, methods=["GET"]),
        ])

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self._app(scope, receive, send)

    def _authorized(self, request: Request) -> bool:
        if self.token is None:
            return True
        given = request.query_params.get("token", "")
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        return hmac.compare_digest(given.encode(), self.token.encode())

    async def _index(self, request: Request) -> Response:
        page = self._assets["index.html"].replace(
            b"__REFRESH_SECONDS__", str(self.refresh_seconds).encode()
        ).replace(b"__SOURCE__", _html_escape(self.source.name).encode())
        return Response(page, headers={"content-type": _TYPES[".html"], **_NO_STORE})

    async def _asset(self, request: Request) -> Response:
        name = request.path_params["name"]
        body = self._assets.get(name)
        if body is None or name == "index.html":
            return _error(404, "NOT_FOUND", f"no asset {name!r}")
        suffix = name[name.rfind("."):]
        cache = "public, max-age=86400" if name == "plotly.min.js" else "no-cache"
        return Response(body, headers={"content-type": _TYPES[suffix], "cache-control": cache})

    def _view(self, request: Request) -> Response:  # sync: Starlette runs it in a worker thread
        if not self._authorized(request):
            return _error(401, "UNAUTHORIZED", "this dashboard needs its token")
        try:
            body = self.source.view(request.path_params["view"], request.query_params)
        except ValueError as exc:
            return _error(400, "VALIDATION_ERROR", str(exc))
        except SourceError as exc:
            return _error(502, "SOURCE_UNAVAILABLE", str(exc))
        return JSONResponse(body, headers=_NO_STORE)

    def _health_json(self) -> dict[str, Any]:
        reports = [source.read() for source in self.health_sources]
        return {"total": combine(reports).to_json(), "sources": [r.to_json() for r in reports]}

    def _health(self, request: Request) -> Response:
        if not self._authorized(request):
            return _error(401, "UNAUTHORIZED", "this dashboard needs its token")
        return JSONResponse(self._health_json(), headers=_NO_STORE)

    def _overview(self, request: Request) -> Response:
        """Everything the page shows, in one request (one worker thread, the queries one after
        the other): `options`, `summary`, `series` by consumer/metric/api, `top`, `health`."""
        if not self._authorized(request):
            return _error(401, "UNAUTHORIZED", "this dashboard needs its token")
        params = dict(request.query_params)
        params.pop("token", None)
        try:
            body = {
                "options": self.source.view("options", {}),
                "summary": self.source.view("summary", params),
                "series": {by: self.source.view("series", {**params, "by": by})
                           for by in ("consumer", "metric", "api")},
                "top": self.source.view("top", {**params, "limit": "10"}),
                "health": self._health_json(),
            }
        except ValueError as exc:
            return _error(400, "VALIDATION_ERROR", str(exc))
        except SourceError as exc:
            return _error(502, "SOURCE_UNAVAILABLE", str(exc))
        return JSONResponse(body, headers=_NO_STORE)


def _html_escape(text: str) -> str:
    import html

    return html.escape(text, quote=True)
