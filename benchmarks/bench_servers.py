"""Requests/s of the local servers on loopback, from keep-alive httpx clients.

    python benchmarks/bench_servers.py [--seconds 3] [--in-process]

Each server runs in its own process (`aerostack-meter gateway|mock-llm`, so the client threads
do not share its GIL) unless `--in-process`. Loops are bounded in time and count and reach only
127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import httpx

MAX_REQUESTS_PER_THREAD = 200_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _server(kind: str, in_process: bool) -> Iterator[str]:
    """Yield the base URL (`.../v1`) of a running server."""
    if in_process:
        from aerostack_meter.servers import start_gateway, start_mock_llm

        handle = start_gateway() if kind == "gateway" else start_mock_llm()
        with handle:
            yield handle.url
        return
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "aerostack_meter.cli", kind, "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if "listening on" not in line:
            raise RuntimeError(f"{kind} did not start: {line!r}")
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def _measure(threads: int, seconds: float, make_call: Callable[[httpx.Client], None]) -> float:
    counts = [0] * threads
    errors: list[BaseException] = []
    start_barrier = threading.Barrier(threads + 1)
    deadline = [0.0]

    def worker(i: int) -> None:
        with httpx.Client(timeout=10) as client:
            make_call(client)  # warm the connection
            start_barrier.wait()
            n = 0
            try:
                while time.perf_counter() < deadline[0] and n < MAX_REQUESTS_PER_THREAD:
                    make_call(client)
                    n += 1
            except BaseException as exc:
                errors.append(exc)
            counts[i] = n

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    deadline[0] = time.perf_counter() + seconds
    start = time.perf_counter()
    start_barrier.wait()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} client errors, first: {errors[0]!r}")
    return sum(counts) / elapsed


def _raw_client(port: int, seconds: float) -> None:
    """A minimal keep-alive HTTP/1.1 client (one socket, no parsing beyond Content-Length),
    to show what the server sustains when the client costs next to nothing."""
    body = b'{"consumerId":"usr_raw","apiId":"api_bench","units":1}'
    request = (
        b"POST /v1/gateway/billing/log HTTP/1.1\r\nHost: bench\r\nX-Aerostack-Key: k\r\n"
        b"Content-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )
    n, buf = 0, b""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        end = time.perf_counter() + seconds
        while time.perf_counter() < end and n < MAX_REQUESTS_PER_THREAD:
            sock.sendall(request)
            while True:
                head_end = buf.find(b"\r\n\r\n")
                if head_end >= 0:
                    length = int(
                        buf[:head_end].lower().split(b"content-length: ")[1].split(b"\r\n")[0]
                    )
                    if len(buf) >= head_end + 4 + length:
                        if not buf.startswith(b"HTTP/1.1 200"):
                            raise RuntimeError(buf[:40])
                        buf = buf[head_end + 4 + length :]
                        break
                chunk = sock.recv(65536)
                if not chunk:
                    raise RuntimeError("connection closed")
                buf += chunk
            n += 1
    print(n / seconds)


def _raw_rate(port: int, processes: int, seconds: float) -> float:
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--raw-client", str(port), "--seconds", str(seconds)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    return sum(float(p.communicate(timeout=seconds + 30)[0]) for p in procs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--raw-client", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--in-process", action="store_true", help="run the servers in this process")
    args = parser.parse_args()
    if args.raw_client is not None:
        _raw_client(args.raw_client, args.seconds)
        return
    where = "in-process (shared GIL)" if args.in_process else "server in its own process"
    print(
        f"machine: nproc={os.cpu_count()} python={platform.python_version()} ({where}, {args.seconds:g} s per cell)"
    )

    with _server("gateway", args.in_process) as url:
        billing = f"{url}/gateway/billing/log"
        body = {"consumerId": "usr_bench", "apiId": "api_bench", "units": 7, "metric": "tokens"}

        def log(client: httpx.Client) -> None:
            r = client.post(billing, json=body, headers={"X-Aerostack-Key": "ac_secret_bench"})
            if r.status_code != 200:
                raise RuntimeError(f"status {r.status_code}")

        for threads in (1, 8):
            rate = _measure(threads, args.seconds, log)
            print(f"gateway  POST /v1/gateway/billing/log  {threads} thread(s): {rate:8.0f} req/s")
        if not args.in_process:
            port = int(url.rsplit(":", 1)[1].split("/")[0])
            for procs in (1, 2):
                rate = _raw_rate(port, procs, args.seconds)
                print(
                    f"gateway  POST /v1/gateway/billing/log  {procs} raw-socket client process(es): {rate:8.0f} req/s"
                )

    with _server("mock-llm", args.in_process) as url:
        chat = {"model": "m", "messages": [{"role": "user", "content": "hello from the benchmark"}]}
        streamed = {**chat, "stream": True, "stream_options": {"include_usage": True}}

        def complete(client: httpx.Client) -> None:
            r = client.post(f"{url}/chat/completions", json=chat)
            if r.status_code != 200:
                raise RuntimeError(f"status {r.status_code}")

        def stream(client: httpx.Client) -> None:
            r = client.post(f"{url}/chat/completions", json=streamed)
            if r.status_code != 200 or not r.text.endswith("data: [DONE]\n\n"):
                raise RuntimeError(f"status {r.status_code}")

        for threads in (1, 8):
            rate = _measure(threads, args.seconds, complete)
            print(f"mock-llm POST /v1/chat/completions     {threads} thread(s): {rate:8.0f} req/s")
        for threads in (1, 8):
            rate = _measure(threads, args.seconds, stream)
            print(
                f"mock-llm POST /v1/chat/completions (stream, 13 events) {threads} thread(s): {rate:8.0f} req/s"
            )


if __name__ == "__main__":
    main()
