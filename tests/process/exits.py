"""Metered calls, then the process ends without its exit hooks.

    python -m tests.process.exits <os_exit|sigterm|kill9|normal>
"""

from __future__ import annotations

import os
import signal
import sys

from tests.process import apps


def main() -> None:
    how = sys.argv[1]
    total = sum(apps.chat(f"usr_{i % 2}", 3 + i) for i in range(6))
    print(total, flush=True)
    if how == "os_exit":
        os._exit(0)
    if how == "sigterm":
        os.kill(os.getpid(), signal.SIGTERM)  # the default action: no atexit
    if how == "kill9":
        os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    main()
