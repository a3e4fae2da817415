"""A tiny gateway stand-in of the tests' own (stdlib HTTP server on loopback): it records every
request, headers and body, and answers from a programmable script of responses."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class StandIn:
    url: str = ""
    requests: list[Seen] = field(default_factory=list)
    script: list[tuple[int, dict[str, str], bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def respond(self, *responses: tuple[int, dict[str, str], bytes] | int) -> None:
        """Queue responses for the next requests; afterwards every request gets 200."""
        with self.lock:
            for r in responses:
                self.script.append((r, {}, b"") if isinstance(r, int) else r)

    def accepted(self) -> list[Seen]:
        return [r for r in self.requests if r.headers.get("x-status") == "200"]

    def units_by_consumer(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.accepted():
            out[r.body["consumerId"]] = out.get(r.body["consumerId"], 0) + r.body["units"]
        return out


@contextmanager
def standin_server() -> Iterator[StandIn]:
    state = StandIn()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            with state.lock:
                status, headers, body = state.script.pop(0) if state.script else (200, {}, b"")
                if status == 200 and not body:
                    payload = json.loads(raw)
                    body = json.dumps({"success": True, "loggedUnits": payload["units"]}).encode()
                hdrs = {k.lower(): v for k, v in self.headers.items()}
                hdrs["x-status"] = str(status)
                state.requests.append(Seen(self.path, hdrs, json.loads(raw)))
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
