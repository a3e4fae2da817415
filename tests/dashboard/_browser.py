"""Headless Chromium for the dashboard tests: the Debian `chromium` package, driven by Playwright.

Never downloads a browser: Playwright is pointed at the system binary. The tests are skipped only
when that binary is absent *and* this is not CI (`.ci/run` installs it, so CI always runs them).
"""

from __future__ import annotations

import os
import shutil

import pytest

CHROMIUM = os.environ.get("AEROSTACK_CHROMIUM") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    """The browser to drive; skips outside CI when there is none, fails in CI."""
    if os.path.exists(CHROMIUM) or shutil.which(CHROMIUM):
        return CHROMIUM
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the browser tests, but {CHROMIUM} is missing (.ci/run installs it)")
    pytest.skip(f"no {CHROMIUM}: apt-get install chromium to run the browser tests")
