"""The process-model matrix: real servers and pools, real SDK calls to the mock LLM, the gateway
emulator as the billing API, and the default configuration (``import aerostack_meter.auto``:
durable). Each cell checks, per consumer: gateway units (net of duplicate Idempotency-Keys) ==
the usage the mock LLM returned, after ``aerostack-meter drain`` where every process died (where a
server killed a worker with calls in flight, which nobody can bill: answered <= billed <= served); and
records the delay from the end of the traffic until everything was delivered
(``MATRIX_REPORT=file.json`` writes the rows for docs/reliability.md)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aerostack_meter._secret import Secret
from aerostack_meter.servers import start_gateway, start_mock_llm

KEY = "ac_secret_process_matrix_key"
ROOT = str(Path(__file__).resolve().parents[2])
ROWS: list[dict[str, Any]] = []


class World:
    def __init__(self, tmp: Path) -> None:
        self.gw = start_gateway(keys=[KEY])
        self.llm = start_mock_llm()
        self.state = tmp / "state"
        self.server_log = tmp / "server.log"  # a served app's stderr (see _serve)

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": ROOT, "AEROSTACK_API_KEY": KEY,
                "AEROSTACK_API_ID": "api_proc", "AEROSTACK_BASE_URL": self.gw.url,
                "AEROSTACK_METER_STATE_DIR": str(self.state), "MATRIX_LLM": self.llm.url, **extra}

    def expected(self) -> dict[str, int]:
        return {c: int(v["total_tokens"]) for c, v in self.llm.usage()["by_consumer"].items()}

    def billed(self) -> dict[str, int]:
        net: dict[str, int] = {}
        seen: set[str] = set()
        for r in self.gw.client.log():
            key = r["idempotencyKey"]
            if key in seen:
                continue  # a duplicate (an ambiguous retry): net of it
            seen.add(key)
            net[r["consumerId"]] = net.get(r["consumerId"], 0) + int(r["units"])
        return net

    def drain(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "aerostack_meter.cli", "drain", "--timeout",
                               str(timeout), *args], capture_output=True, text=True, env=self.env(),
                              timeout=timeout + 30, cwd=ROOT)

    def settle(self, cell: str, t_end: float, *, drained: bool, note: str = "") -> None:
        """Wait (bounded) until the gateway holds what the mock returned; record the delay."""
        expected = self.expected()
        deadline = time.monotonic() + 20
        while self.billed() != expected and time.monotonic() < deadline:
            time.sleep(0.05)
        delay = time.monotonic() - t_end
        ROWS.append({"cell": cell, "expected": sum(expected.values()),
                     "billed": sum(self.billed().values()), "delay_s": round(delay, 2),
                     "drain": drained, "note": note})
        assert expected, "no LLM call was made"
        assert self.billed() == expected

    def stop(self) -> None:
        self.gw.stop()
        self.llm.stop()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.stop()


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    path = os.environ.get("MATRIX_REPORT")
    if path and ROWS:
        Path(path).write_text(json.dumps(ROWS, indent=1))


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def _serve(cmd: list[str], world: World, port: int) -> subprocess.Popen[str]:
    # The server's stderr goes to a file, never to a pipe nobody reads while it runs: a full pipe
    # (its workers' logs at shutdown) blocks them in write(), and the master waits for them for ever.
    world.server_log = world.state.parent / f"server-{port}.log"
    with open(world.server_log, "w") as err:
        proc = subprocess.Popen(cmd, env=world.env(), cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=err, text=True, start_new_session=True)
    deadline = time.monotonic() + 40
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/chat?consumer=warmup&n=1", timeout=10)
            return proc
        except httpx.HTTPError:
            assert proc.poll() is None, world.server_log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.2)


#: requests each client still starts after the SIGTERM (traffic during the graceful shutdown)
AFTER_SIGTERM = 2


class Traffic:
    """What the clients of ``_traffic_then_sigterm`` were answered: per consumer, the units of
    every response that reached them (each was metered before the worker answered it)."""

    def __init__(self) -> None:
        self.answered: dict[str, int] = {}
        self.lock = threading.Lock()

    def add(self, consumer: str, units: int) -> None:
        with self.lock:
            self.answered[consumer] = self.answered.get(consumer, 0) + units


def _traffic_then_sigterm(proc: subprocess.Popen[str], port: int, log: Path) -> tuple[float, Traffic]:
    """4 clients call for a while; SIGTERM reaches the master mid-traffic, and each client still
    starts AFTER_SIGTERM requests, then closes its connection. Returns when the master has exited
    (the end of the traffic).

    The traffic after the signal is bounded on purpose: a connection a uvicorn worker accepts as
    it begins its graceful shutdown (accepted, its protocol not yet made when the worker tells its
    connections to close) is never told to close, and a client that keeps sending on it keeps
    that worker in "Waiting for connections to close" until the client stops: uvicorn
    ``--workers`` waits for it for ever, gunicorn SIGKILLs it after ``--graceful-timeout`` with a
    call in flight (seen under load; see docs/reliability.md)."""
    signalled = threading.Event()
    traffic = Traffic()

    def client(i: int) -> None:
        consumer = f"usr_{i % 3}"
        with httpx.Client(timeout=30) as c:
            k = after = 0
            while not (signalled.is_set() and after == AFTER_SIGTERM):
                after += signalled.is_set()
                try:
                    r = c.get(f"http://127.0.0.1:{port}/chat?consumer={consumer}&n={2 + k % 5}")
                except httpx.HTTPError:
                    return  # the server is going away
                if r.status_code == 200:
                    traffic.add(consumer, int(r.text))
                k += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    proc.send_signal(signal.SIGTERM)
    signalled.set()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        raise AssertionError("the server did not stop within 60 s of SIGTERM; its log:\n"
                             + log.read_text()[-3000:]) from None
    finally:
        for t in threads:
            t.join(30)
    return time.monotonic(), traffic


def _killed_workers(log: Path) -> set[str]:
    """Workers that started serving and never finished (uvicorn logs both at level info): the
    server killed them (gunicorn's ``--graceful-timeout``, uvicorn's health check) or they died."""
    text = log.read_text()
    started = set(re.findall(r"Started server process \[(\d+)\]", text))
    return started - set(re.findall(r"Finished server process \[(\d+)\]", text))


def _settle_server(world: World, cell: str, t_end: float, traffic: Traffic) -> None:
    """Everything the mock LLM served is billed, after ``drain``; unless the server killed a
    worker: then a call it had in flight may have been served by the provider and never returned
    to the SDK (nobody can bill it), so per consumer: answered <= billed <= served."""
    r = world.drain()
    assert r.returncode == 0, r.stdout + r.stderr
    killed = _killed_workers(world.server_log)
    if not killed:
        world.settle(cell, t_end, drained=True)
        return
    deadline = time.monotonic() + 20
    while (any(world.billed().get(c, 0) < u for c, u in traffic.answered.items())
           and time.monotonic() < deadline):
        time.sleep(0.05)
    served, billed = world.expected(), world.billed()
    ROWS.append({"cell": cell, "expected": sum(served.values()), "billed": sum(billed.values()),
                 "delay_s": round(time.monotonic() - t_end, 2), "drain": True,
                 "note": f"the server killed worker(s) {sorted(killed)} with calls in flight"})
    assert traffic.answered, "no call was answered"
    for consumer, units in served.items():
        assert traffic.answered.get(consumer, 0) <= billed.get(consumer, 0) <= units, (
            consumer, traffic.answered, billed, served, world.server_log.read_text()[-3000:])


@pytest.mark.timeout(150)
def test_uvicorn_two_workers_sigterm_during_traffic(world: World) -> None:
    port = _free_port()
    proc = _serve([sys.executable, "-m", "uvicorn", "tests.process.apps:asgi", "--workers", "2",
                   "--port", str(port), "--log-level", "info"], world, port)
    t_end, traffic = _traffic_then_sigterm(proc, port, world.server_log)
    _settle_server(world, "uvicorn --workers 2, SIGTERM during traffic", t_end, traffic)


@pytest.mark.timeout(150)
@pytest.mark.parametrize("worker", ["sync", "uvicorn.workers.UvicornWorker"])
def test_gunicorn_preload_sigterm_to_the_master_during_traffic(world: World, worker: str) -> None:
    port = _free_port()
    app = "tests.process.apps:wsgi" if worker == "sync" else "tests.process.apps:asgi"
    proc = _serve([sys.executable, "-m", "gunicorn", "--preload", "-w", "2", "-k", worker,
                   "-b", f"127.0.0.1:{port}", "--graceful-timeout", "10", "--log-level", "info",
                   app], world, port)
    t_end, traffic = _traffic_then_sigterm(proc, port, world.server_log)
    _settle_server(world, f"gunicorn --preload -k {worker.rsplit('.', 1)[-1]}, SIGTERM to the master",
                   t_end, traffic)


@pytest.mark.timeout(150)
@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
@pytest.mark.parametrize("style", ["with", "close", "executor"])
def test_process_pools_lose_nothing_without_a_drain(world: World, method: str, style: str) -> None:
    if style == "executor" and method == "forkserver":
        pytest.skip("the executor cell runs with fork and spawn (forkserver: same as the Pool cell)")
    r = subprocess.run([sys.executable, "-m", "tests.process.pools", method, style],
                       capture_output=True, text=True, env=world.env(), cwd=ROOT, timeout=120)
    t_end = time.monotonic()
    assert r.returncode == 0, r.stderr[-3000:]
    assert int(r.stdout.strip()) == sum(world.expected().values()) - 0
    world.settle(f"multiprocessing {method}, {style}", t_end, drained=False,
                 note="the parent adopts what its workers left, in its exit flush")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("how", ["os_exit", "sigterm", "kill9"])
def test_a_process_that_dies_without_its_exit_hooks(world: World, how: str) -> None:
    r = subprocess.run([sys.executable, "-m", "tests.process.exits", how], capture_output=True,
                       text=True, env=world.env(), cwd=ROOT, timeout=60)
    t_end = time.monotonic()
    assert int(r.stdout.split()[0]) > 0
    d = world.drain()
    assert d.returncode == 0, d.stdout + d.stderr
    world.settle(f"{how} after the calls", t_end, drained=True)


@pytest.mark.timeout(120)
def test_a_401_period_then_the_right_key(world: World) -> None:
    r = subprocess.run([sys.executable, "-m", "tests.process.exits", "normal"], capture_output=True,
                       text=True, timeout=60, cwd=ROOT, env=world.env(AEROSTACK_API_KEY="ac_wrong_key"))
    assert r.returncode == 0, r.stderr
    assert "refused the API key" in r.stderr
    assert world.billed() == {}
    t_end = time.monotonic()
    # The API refused that key: a refused key bills no account, so a process with the right key
    # delivers what was journaled under it (a key it never refused would stay that key's).
    d = world.drain()
    assert d.returncode == 0, d.stdout + d.stderr
    world.settle("a 401 period, then the right key", t_end, drained=True)


@pytest.mark.timeout(120)
def test_the_gateway_down_for_a_long_time_is_never_given_up(world: World) -> None:
    """An outage far past the old retry limit (20 attempts): retried for as long as it takes,
    one request per key per backoff, everything delivered when it is back."""
    world.gw.client.set_faults(fail_rate=1.0, fail_statuses=[503])
    code = """
import json, time
from tests.process import apps
import aerostack_meter as am
for i in range(30):
    apps.chat("usr_%d" % (i % 3), 2 + i % 4)
    time.sleep(0.1)
print(json.dumps({"retries": am.stats().retries}), flush=True)
t0 = time.monotonic()
while not am.flush(0.2) and time.monotonic() - t0 < 60:
    pass
print(json.dumps({"retries": am.stats().retries, "dropped": dict(am.stats().dropped)}), flush=True)
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env=world.env(), cwd=ROOT)
    assert proc.stdout is not None
    first = json.loads(proc.stdout.readline())
    time.sleep(3)
    world.gw.client.clear_faults()
    t_end = time.monotonic()
    last = json.loads(proc.stdout.readline())
    proc.wait(30)
    proc.stdout.close()
    assert last["dropped"] == {} and last["retries"] > 20 and first["retries"] > 0
    world.settle("gateway down, then back (never given up)", t_end, drained=False,
                 note=f"{last['retries']} retries")


@pytest.mark.timeout(120)
def test_a_corrupted_state_directory_at_start_up(world: World) -> None:
    from aerostack_meter._paths import destination_dir

    d = Path(destination_dir(str(world.state), world.gw.url, Secret(KEY).fingerprint()))
    (d / "deadbeefdeadbeef0000.0.journal").write_bytes(os.urandom(4096))
    (d / "deadbeefdeadbeef0000.lock").write_bytes(b"not a lock")
    (d / "dead-letters.jsonl").write_bytes(b"\x00\xffnot json\n{\"half\": \n")
    (d / "destination").write_bytes(b"\xff\xfe garbage")
    r = subprocess.run([sys.executable, "-m", "tests.process.exits", "normal"], capture_output=True,
                       text=True, env=world.env(), cwd=ROOT, timeout=60)
    t_end = time.monotonic()
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "damaged" in r.stderr  # warned once
    assert list(d.glob("*.corrupt-*"))  # quarantined, not deleted
    world.settle("a corrupted state directory at start-up", t_end, drained=False)
