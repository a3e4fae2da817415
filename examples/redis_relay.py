"""Two processes: a chatbot that hands its usage to a Redis stream, and a relay that bills it.

    python examples/redis_relay.py

The app (this process) writes usage to Redis, nothing else (``AEROSTACK_METER_REDIS_URL``, or
``init(sink="redis://...")``); ``aerostack-meter relay`` (a second process, as it would run on
another machine) reads the stream, delivers to the billing API and acknowledges. Offline by
default: a local mock LLM, a gateway emulator and, unless AEROSTACK_METER_REDIS_URL names one, a
``redis-server`` on a free loopback port (the Debian package ``redis-server``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator

import openai
from _local import local_servers, print_tokens

import aerostack_meter
from aerostack_meter.relay import StreamConfig, format_stats, gather

USERS = {"usr_alice": 3, "usr_bob": 2, "usr_carol": 4}  # user -> questions asked


@contextlib.contextmanager
def local_redis() -> Iterator[str]:
    """The Redis named by AEROSTACK_METER_REDIS_URL, or a redis-server of our own."""
    url = os.environ.get("AEROSTACK_METER_REDIS_URL")
    if url:
        yield url
        return
    exe = shutil.which("redis-server")
    if exe is None:
        sys.exit("redis_relay: set AEROSTACK_METER_REDIS_URL, or install redis-server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as data:
        server = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", data,
                                   "--appendonly", "yes", "--save", ""], stdout=subprocess.DEVNULL)
        url = f"redis://127.0.0.1:{port}/0"
        try:
            client = StreamConfig.from_url(url).connect()
            for _ in range(200):
                with contextlib.suppress(Exception):
                    if client.ping():
                        break
                time.sleep(0.05)
            os.environ["AEROSTACK_METER_REDIS_URL"] = url
            yield url
        finally:
            server.terminate()
            server.wait()


def start_relay(url: str) -> subprocess.Popen[str]:
    """The second process. It reads AEROSTACK_API_KEY and AEROSTACK_BASE_URL like the library."""
    relay = subprocess.Popen([sys.executable, "-m", "aerostack_meter.cli", "relay", "--redis", url,
                              "--name", "relay-1"], stdout=subprocess.PIPE, text=True)
    assert relay.stdout is not None
    print(relay.stdout.readline().strip())  # "aerostack-meter relay relay-1 consuming ..."
    return relay


def main(url: str) -> None:
    aerostack_meter.init(api_id="api_chatbot")  # the sink comes from AEROSTACK_METER_REDIS_URL
    client = openai.OpenAI()
    reported: Counter[str] = Counter()
    for user, questions in USERS.items():
        with aerostack_meter.consumer(user):
            for i in range(questions):
                r = client.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": f"Question {i}?"}])
                reported[user] += r.usage.total_tokens if r.usage else 0
    aerostack_meter.flush(10)  # in the stream now; the app's part is done

    relay = start_relay(url)
    try:
        stream = StreamConfig.from_url(url)
        redis = stream.connect(decode_responses=True)
        deadline = time.monotonic() + 30
        while gather(redis, stream)["undelivered"] and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.1)  # one stats period, so the relay's published counters are current
        print(format_stats(gather(redis, stream)), end="")
    finally:
        relay.terminate()
        relay.wait(15)
    print_tokens(reported, USERS)
    aerostack_meter.shutdown()


if __name__ == "__main__":
    with local_servers(), local_redis() as redis_url:
        main(redis_url)
