"""examples/prepaid_credits.py runs offline: the trial consumer is refused mid-conversation with a
message the chatbot shows, the paid one is answered throughout, and the wallets add up."""

from __future__ import annotations

import re
import subprocess
import sys

from ..attribution.test_examples import EXAMPLES, _fresh_env


def test_prepaid_credits_example() -> None:
    proc = subprocess.run([sys.executable, str(EXAMPLES / "prepaid_credits.py")], env=_fresh_env(),
                          cwd=EXAMPLES.parent, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    refused = re.findall(r"^usr_trial turn (\d): REFUSED: (.*)$", out, re.M)
    assert len(refused) == 1, out
    turn, message = refused[0]
    assert 1 < int(turn) < 5  # mid-conversation
    assert message.startswith("Sorry, your balance ($") and "top up" in message
    totals = {m[0]: (int(m[1]), int(m[2]), int(m[3])) for m in re.findall(
        r"^(usr_\w+): (\d) of 5 turns answered, (\d+) micro-USD billed, (\d+) left", out, re.M)}
    assert totals["usr_trial"][0] == int(turn) - 1
    assert totals["usr_paid"][0] == 5
    assert totals["usr_trial"][1] + totals["usr_trial"][2] == 15_000  # billed + left = the wallet
    assert totals["usr_paid"][1] + totals["usr_paid"][2] == 1_000_000
    assert all(billed > 0 for _, billed, _ in totals.values())
    assert "refused before sending: 1;" in out
