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
