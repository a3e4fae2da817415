"""Write one benchmark's section into docs/performance.md, replacing that section only."""

from __future__ import annotations

import os
import platform
import re
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "performance.md"


def machine() -> str:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} CPUs ({cpu or platform.processor() or 'unknown'}), "
            f"Python {platform.python_version()}, {platform.system()} {platform.release()}")


def update_section(heading: str, body: str) -> None:
    """Replace (or append) the ``## heading`` section of docs/performance.md."""
    DOC.parent.mkdir(parents=True, exist_ok=True)
    text = DOC.read_text() if DOC.exists() else "# Performance\n"
    section = f"## {heading}\n\n{body.strip()}\n\n"
    pattern = re.compile(rf"^## {re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text, count=1)
    else:
        text = text.rstrip() + "\n\n" + section
    DOC.write_text(text.rstrip() + "\n")
    print(f"wrote section '{heading}' of {DOC.relative_to(DOC.parent.parent)}", file=sys.stderr)


def load_note(before: float, after: float) -> str:
    """A line for a section: the load average around the run, flagged when above the core count
    (figures taken under heavy load are not to be trusted much: say so instead of hiding it)."""
    cores = os.cpu_count() or 1
    line = f"Load average before/after the run: {before:.1f} / {after:.1f} ({cores} cores)."
    if max(before, after) > cores:
        line = ("**Taken under heavy load** (other sessions shared the machine): the added times "
                "are noisy; the ratios are the figures to read. " + line)
    return line
