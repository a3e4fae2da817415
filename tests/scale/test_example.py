"""examples/redis_relay.py runs offline (its own servers and redis-server) and bills exactly."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_redis_relay_example() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_", "AEROSTACK_"))}
    out = subprocess.run([sys.executable, str(EXAMPLES / "redis_relay.py")], env=env, cwd=EXAMPLES.parent,
                         capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr[-3000:]
    got = {m[1]: (int(m[2]), int(m[3])) for m in
           re.finditer(r"^(usr_\w+): (\d+) tokens reported by the API, (\d+) billed", out.stdout, re.M)}
    assert set(got) == {"usr_alice", "usr_bob", "usr_carol"}, out.stdout
    assert all(reported == billed > 0 for reported, billed in got.values()), got
    assert "undelivered: 0 " in out.stdout and "relay relay-1" in out.stdout
