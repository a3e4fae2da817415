"""`aerostack-meter relay --stats` and the relay command's refusals, as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ._redis import RedisServer
from ._support import KEY, append


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("AEROSTACK_")}
    return subprocess.run([sys.executable, "-m", "aerostack_meter.cli", "relay", *args],
                          env={**base, **env}, capture_output=True, text=True, timeout=60)


def test_stats_json_and_text(redis_db: RedisServer) -> None:
    client = redis_db.client()
    client.xgroup_create("aerostack:usage", "aerostack-relay", id="0", mkstream=True)
    append(client, [("a", "usr_1", 5), ("b", "usr_2", 7)])
    out = _run("--stats", "--json", AEROSTACK_METER_REDIS_URL=redis_db.url)
    assert out.returncode == 0, out.stderr
    snap = json.loads(out.stdout)
    assert (snap["length"], snap["lag"], snap["undelivered"]) == (2, 2, 2)
    text = _run("--stats", "--redis", redis_db.url)
    assert "undelivered: 2 (2 not read, 0 read and not acknowledged)" in text.stdout


def test_refusals_say_what_is_missing(redis_db: RedisServer) -> None:
    no_url = _run()
    assert no_url.returncode == 2 and "AEROSTACK_METER_REDIS_URL" in no_url.stderr
    no_key = _run("--redis", redis_db.url)
    assert no_key.returncode == 2 and "AEROSTACK_API_KEY" in no_key.stderr
    bad = _run("--redis", "redis://localhost/0?maxlen=-1", AEROSTACK_API_KEY=KEY)
    assert bad.returncode == 2 and "maxlen" in bad.stderr


@pytest.mark.parametrize("url", ["redis://:s3cretpass@127.0.0.1:1/0", "redis://127.0.0.1:1/0?password=s3cretpass"])
def test_the_redis_password_is_never_printed(redis_db: RedisServer, url: str) -> None:
    out = _run("--stats", "--redis", url)
    assert out.returncode == 1
    assert "s3cretpass" not in out.stdout + out.stderr


@pytest.mark.parametrize(("flag", "value"), [("--claim-idle", "-1"), ("--read-count", "0"), ("--block", "nan"),
                                             ("--max-held", "0"), ("--delivered-ttl", "inf"),
                                             ("--metrics-port", "99999")])
def test_a_value_redis_would_refuse_on_every_read_is_refused_at_once(redis_db: RedisServer, flag: str,
                                                                      value: str) -> None:
    # (not a relay that starts, says "consuming", then retries a refused read for ever)
    out = _run("--redis", redis_db.url, f"{flag}={value}", AEROSTACK_API_KEY=KEY)
    assert out.returncode == 2, out.stdout + out.stderr
    assert flag in out.stderr and "Traceback" not in out.stderr
    assert "consuming" not in out.stdout


def test_relay_options_refuse_what_redis_would() -> None:
    from aerostack_meter import ConfigError
    from aerostack_meter.relay import RelayOptions

    for bad in ({"read_count": 0}, {"claim_idle": -1.0}, {"block": float("nan")}, {"max_held": 0},
                {"read_count": True}):
        with pytest.raises(ConfigError):
            RelayOptions(**bad)  # type: ignore[arg-type]
    assert RelayOptions(claim_idle=0, block=0).read_count == 1000
