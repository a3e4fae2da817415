"""Where durable state lives: the state directory and one sub-directory per billing destination.

The default follows each platform's convention for per-user state (no dependency needed):

* Linux and other Unix: ``$XDG_STATE_HOME/aerostack-meter``, else ``~/.local/state/aerostack-meter``
* macOS: ``~/Library/Application Support/aerostack-meter``
* Windows: ``%LOCALAPPDATA%\\aerostack-meter``

``state_dir=`` or ``AEROSTACK_METER_STATE_DIR`` overrides it. Directories are created 0700 and
files 0600: the journals hold consumer ids and units (never prompt text, never the API key).
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Mapping

__all__ = ["default_state_dir", "destination_dir", "ensure_private_dir"]

APP = "aerostack-meter"


def default_state_dir(environ: Mapping[str, str] | None = None, platform: str | None = None) -> str:
    env = os.environ if environ is None else environ
    plat = sys.platform if platform is None else platform
    home = env.get("HOME") or os.path.expanduser("~")
    if plat.startswith("win"):
        base = env.get("LOCALAPPDATA") or os.path.join(home, "AppData", "Local")
    elif plat == "darwin":
        base = os.path.join(home, "Library", "Application Support")
    else:
        xdg = env.get("XDG_STATE_HOME", "")
        base = xdg if os.path.isabs(xdg) else os.path.join(home, ".local", "state")
    return os.path.join(base, APP)


def ensure_private_dir(path: str) -> str:
    """Create ``path`` (0700) if needed and check that we can write there. Raises ``OSError``."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    if not os.access(path, os.W_OK | os.X_OK):
        raise PermissionError(f"{path} is not writable")
    return path


def destination_dir(state_dir: str, destination: str) -> str:
    """The sub-directory for one billing destination (a base URL or a ledger path; never a key).

    Processes that share a state directory and a destination adopt each other's leftovers.
    """
    slug = hashlib.sha256(destination.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    path = ensure_private_dir(os.path.join(state_dir, slug))
    marker = os.path.join(path, "destination")
    if not os.path.exists(marker):
        tmp = f"{marker}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, destination.encode("utf-8", "surrogatepass"))
        finally:
            os.close(fd)
        os.replace(tmp, marker)
    return path
