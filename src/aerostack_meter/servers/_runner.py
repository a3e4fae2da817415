"""Run an ASGI app on uvicorn in a background thread, on loopback.

`ServerThread` binds the socket itself (so port 0 yields a real port before the server runs and
a stopped server's port can be bound again at once), serves on a private event loop in a daemon
thread, and stops in a fraction of a second. Long-running handlers (injected hangs, slow streams)
should wait on `Closing` so that `stop()` never has to wait for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import socket
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from types import TracebackType
from typing import Any, TypeVar

import uvicorn

__all__ = ["Closing", "ServerHandle", "ServerThread", "Stoppable", "mark_intentional_drop"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_S = TypeVar("_S", bound="Stoppable")

_START_TIMEOUT = 10.0
_GRACEFUL_SHUTDOWN = 1

# Set by a handler that abandons a response on purpose (an injected connection drop); the log
# filter below then hides uvicorn's "returned without completing response" error for it.
_intentional_drop: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "aerostack_intentional_drop", default=False
)


def mark_intentional_drop() -> None:
    """Flag the current request as dropped on purpose (keeps uvicorn's log quiet about it)."""
    _intentional_drop.set(True)


class _DropFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not _intentional_drop.get():
            return True
        msg = str(record.msg)
        return "without completing response" not in msg and "without starting response" not in msg


_drop_filter = _DropFilter()
_filter_lock = threading.Lock()


def _install_log_filter() -> None:
    with _filter_lock:
        logger = logging.getLogger("uvicorn.error")
        if _drop_filter not in logger.filters:
            logger.addFilter(_drop_filter)


class Closing:
    """A stop signal that handlers running on the server's loop can wait on."""

    def __init__(self) -> None:
        self._event: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Thread-safe: wake every waiter."""
        self._closed = True
        loop, event = self._loop, self._event
        if loop is not None and event is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(event.set)

    async def wait(self) -> None:
        if self._event is None:  # pragma: no cover - only if used outside a ServerThread
            self._event = asyncio.Event()
        await self._event.wait()

    async def sleep(self, seconds: float) -> bool:
        """Sleep up to `seconds`; return False if the server is stopping."""
        if seconds <= 0:
            return not self._closed
        try:
            await asyncio.wait_for(self.wait(), timeout=seconds)
        except asyncio.TimeoutError:
            return True
        return False


class _Server(uvicorn.Server):
    """uvicorn's server with an event-driven main loop (no 100 ms polling to notice a stop)."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._wake: asyncio.Event | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    async def main_loop(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 10) % 864000
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=1.0)

    def request_exit(self) -> None:
        self.should_exit = True
        loop, wake = self.loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake.set)


def _bind(host: str, port: int) -> socket.socket:
    # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on sockets that say so, and
    # without it a response written in two parts waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class Stoppable:
    """`with` support for objects released by `stop()` (idempotent in every subclass)."""

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class ServerThread(Stoppable):
    """An ASGI app served by uvicorn in a daemon thread.

    `start()` returns once the server accepts connections; `stop()` is idempotent and also
    wakes every handler waiting on `closing`.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        closing: Closing | None = None,
        name: str = "aerostack-server",
    ) -> None:
        self._app = app
        self._host = host
        self._requested_port = port
        self.closing = closing if closing is not None else Closing()
        self._name = name
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._error: BaseException | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self.port}"

    def start(self) -> ServerThread:
        if self._thread is not None:
            raise RuntimeError("server already started")
        _install_log_filter()
        self._sock = _bind(self._host, self._requested_port)
        self.port = int(self._sock.getsockname()[1])
        config = uvicorn.Config(
            self._app,
            log_config=None,
            log_level="warning",
            lifespan="off",
            access_log=False,
            loop="asyncio",
            http="h11",
            ws="none",
            timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN,
            timeout_keep_alive=30,
            backlog=2048,
        )
        self._server = _Server(config)
        started = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(started,), name=f"{self._name}:{self.port}", daemon=True
        )
        self._thread.start()
        if not started.wait(_START_TIMEOUT) or self._error is not None:
            self.stop()
            raise RuntimeError(f"server failed to start: {self._error!r}")
        return self

    def _run(self, started: threading.Event) -> None:
        server = self._server
        sock = self._sock
        assert server is not None and sock is not None

        async def serve() -> None:
            self.closing.bind(asyncio.get_running_loop())
            watcher = asyncio.create_task(_signal_started(server, started))
            try:
                await server.serve(sockets=[sock])
            finally:
                watcher.cancel()

        try:
            asyncio.run(serve())
        except BaseException as exc:  # never let the thread die with an unhandled error
            self._error = exc
        finally:
            started.set()

    def stop(self) -> None:
        self.closing.close()
        server, thread = self._server, self._thread
        if server is not None:
            server.request_exit()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=_GRACEFUL_SHUTDOWN + 5)
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> ServerThread:
        return self if self._thread is not None else self.start()


class ServerHandle(Stoppable):
    """What the gateway and mock LLM handles share: their server thread and their URLs."""

    _host: str
    _server: ServerThread | None
    port: int

    @property
    def base_url(self) -> str:
        """The server root, `http://127.0.0.1:PORT`."""
        return f"http://{self._host}:{self.port}"

    @property
    def url(self) -> str:
        """The API base URL, `http://127.0.0.1:PORT/v1`."""
        return f"{self.base_url}/v1"

    def _stop_server(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"


async def _signal_started(server: uvicorn.Server, started: threading.Event) -> None:
    while not server.started:
        await asyncio.sleep(0.002)
    started.set()
