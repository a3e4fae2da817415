"""A loopback sink for the peers' exporters: accepts any POST, answers 200 and discards the body.

    python benchmarks/_peers_sink.py [--delay-ms 0]

Prints ``listening on http://127.0.0.1:PORT`` once it accepts connections. ``GET /_stats`` gives
the requests and bytes received per path, so the benchmark can check that every peer delivered.
``--delay-ms`` holds every answer that long (a slow collector: the exporter's thread stays busy).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_lock = threading.Lock()
_requests: Counter[str] = Counter()
_bytes: Counter[str] = Counter()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    delay = 0.0

    def _answer(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            size = 0
            while True:
                n = int(self.rfile.readline().strip() or b"0", 16)
                if n == 0:
                    self.rfile.readline()
                    break
                size += len(self.rfile.read(n))
                self.rfile.readline()
        else:
            size = len(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        with _lock:
            _requests[path] += 1
            _bytes[path] += size
        if self.delay:
            time.sleep(self.delay)
        # Enough for every peer: OTLP/HTTP takes any 200, PostHog and Langfuse read JSON.
        self._answer(200, b'{"status": 1, "success": true}')

    def do_GET(self) -> None:
        if self.path.startswith("/_stats"):
            with _lock:
                body = json.dumps({"requests": dict(_requests), "bytes": dict(_bytes)}).encode()
            self._answer(200, body)
        elif self.path.startswith("/_reset"):
            with _lock:
                _requests.clear()
                _bytes.clear()
            self._answer(200, b"{}")
        else:
            self._answer(200, b"{}")

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--delay-ms", type=float, default=0.0)
    args = ap.parse_args()
    _Handler.delay = args.delay_ms / 1000
    server = ThreadingHTTPServer(("127.0.0.1", args.port), _Handler)
    server.daemon_threads = True
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever(poll_interval=0.2)


if __name__ == "__main__":
    main()
