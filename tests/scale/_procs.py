"""Real processes for the Redis delivery tests: app processes (the fault matrix's workload, with
the Redis sink) and ``aerostack-meter relay`` processes, and the accounting every test checks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

from tests.matrix._harness import ROOT, WORKLOAD, expected_usage

from ._support import API_ID, KEY, STREAM, key_excess, undelivered

APP_METER = {"flush_interval": 0.05, "backoff_base": 0.05, "max_backoff": 0.5, "max_retries": 100_000,
             "exit_timeout": 20.0}


def start_app(redis_url: str, gateway_url: str, llm_url: str, consumers: list[str], calls: int,
              pace: float = 0.0) -> subprocess.Popen[str]:
    cfg = {"key": KEY, "api_id": API_ID, "gateway": gateway_url, "llm": llm_url,
           "consumers": consumers, "providers": ["openai"], "calls": calls, "pace": pace,
           "meter": {**APP_METER, "sink": redis_url}}
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": ROOT}
    return subprocess.Popen([sys.executable, WORKLOAD, json.dumps(cfg)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


def start_relay(redis_url: str, gateway_url: str, name: str, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "AEROSTACK_API_KEY": KEY,
           "AEROSTACK_BASE_URL": gateway_url}
    env.pop("AEROSTACK_METER_REDIS_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "aerostack_meter.cli", "relay", "--redis", redis_url, "--name", name,
         "--claim-idle", "1", "--block", "0.2", "--backoff-base", "0.05", "--max-backoff", "0.5",
         *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert "consuming" in line, (line, proc.stderr.read() if proc.poll() is not None else "")
    return proc


def finish_apps(apps: list[subprocess.Popen[str]], timeout: float = 60.0) -> list[dict[str, Any]]:
    """Wait for the apps; each must exit 0 having dropped nothing. Returns their last stats."""
    out = []
    deadline = time.monotonic() + timeout
    for p in apps:
        try:
            stdout, stderr = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            stdout, stderr = p.communicate()
            raise AssertionError(f"app did not finish; stderr:\n{stderr[-3000:]}") from None
        assert p.returncode == 0, stderr[-3000:]
        stats = [json.loads(line)["stats"] for line in stdout.splitlines() if '"stats"' in line][-1]
        assert stats["dropped"] == {} and stats["pending"] == 0, stats
        out.append(stats)
    return out


def wait_delivered(client: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while undelivered(client) != 0:
        assert time.monotonic() < deadline, f"still undelivered: {undelivered(client)}"
        time.sleep(0.1)


def stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err


def check_totals(gw: Any, llm: Any, client: Any) -> dict[str, int]:
    """Per consumer, the gateway's units net of repeats under one Idempotency-Key equal the usage
    the mock LLM returned; every repeat is within the units the relays counted as ambiguous.
    Returns the excess per consumer."""
    expected = expected_usage(llm)
    assert expected and all(expected.values())
    totals = dict(gw.client.totals_by_consumer())
    excess = key_excess(gw)
    net = {c: u - excess.get(c, 0) for c, u in totals.items()}
    assert net == expected, (net, expected, excess)
    ambiguous = {k: int(v) for k, v in client.hgetall(f"{STREAM}:ambiguous").items()}
    for consumer, units in excess.items():
        assert units <= ambiguous.get(consumer, 0), (excess, ambiguous)
    return excess


def relay_counters(client: Any, name: str) -> dict[str, str]:
    return dict(client.hgetall(f"{STREAM}:relay:{name}"))


__all__ = ["check_totals", "finish_apps", "relay_counters", "start_app", "start_relay",
           "stop", "wait_delivered"]
