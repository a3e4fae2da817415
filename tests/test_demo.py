"""The README's first command ends in `aerostack-meter demo`: it must pass its own check, offline."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest


@pytest.mark.timeout(60)
def test_demo_exits_zero_and_its_check_line_holds(tmp_path: object) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AEROSTACK_", "OPENAI_", "ANTHROPIC_"))}
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "aerostack_meter.cli", "demo"], capture_output=True,
                          text=True, timeout=60, env=env, cwd=str(tmp_path))
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout + proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("check: gateway totals == SDK-reported usage") and last.endswith("OK"), last
    for consumer in ("usr_alice", "usr_bob", "usr_carol"):
        assert consumer in proc.stdout
    assert "TOTAL" in proc.stdout
    print(f"demo took {elapsed:.1f} s")  # the issue asks for < 15 s; measured, not asserted
