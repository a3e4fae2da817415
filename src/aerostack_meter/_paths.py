"""Where durable state lives: the state directory and one sub-directory per billing destination.

The default follows each platform's convention for per-user state (no dependency needed):

* Linux and other Unix: ``$XDG_STATE_HOME/aerostack-meter``, else ``~/.local/state/aerostack-meter``
* macOS: ``~/Library/Application Support/aerostack-meter``
* Windows: ``%LOCALAPPDATA%\\aerostack-meter``

``state_dir=`` or ``AEROSTACK_METER_STATE_DIR`` overrides it. Inside it, one sub-directory per
billing destination and API key (``destination_dir``). Directories are created 0700 and
files 0600: the journals hold consumer ids and units (never prompt text, never the API key).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from collections.abc import Mapping

__all__ = [
    "REFUSED",
    "default_state_dir",
    "destination_dir",
    "destination_slug",
    "ensure_private_dir",
    "fingerprint_suffix",
    "is_fingerprint",
    "key_dir",
    "legacy_dir",
    "other_key_dirs",
    "refused_key_dirs",
    "set_refused",
]

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


def destination_slug(destination: str) -> str:
    """16 hex digits of SHA-256 of the destination (a base URL, a ledger path, ...)."""
    return hashlib.sha256(destination.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def destination_dir(state_dir: str, destination: str, key_fingerprint: str | None = None) -> str:
    """The sub-directory for one billing destination and, when the sink sends with a key, that key:
    ``<slug>-<key fingerprint>`` (``<slug>``: ``destination_slug``; the fingerprint is
    ``Secret.fingerprint()``, never the key). A destination without a key (the ledger) has ``<slug>``.

    Processes that share a state directory, a destination and a key adopt each other's leftovers;
    usage journaled under one key is never delivered with another. ``<slug>`` alone is also where
    versions before the fingerprint journaled keyed destinations (see ``legacy_dir``).
    """
    slug = destination_slug(destination)
    name = slug if key_fingerprint is None else f"{slug}-{key_fingerprint}"
    ensure_private_dir(state_dir)  # 0700 where we create it (makedirs gives parents the default mode)
    path = ensure_private_dir(os.path.join(state_dir, name))
    marker = os.path.join(path, "destination")
    if not os.path.exists(marker):
        tmp = f"{marker}.{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            try:
                data = memoryview(destination.encode("utf-8", "surrogatepass"))
                while data:  # a short write (a file-size limit) is written on, or raises
                    data = data[os.write(fd, data):]
            finally:
                os.close(fd)
            os.replace(tmp, marker)
        except BaseException:  # a full disk: no temporary file left behind
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    return path


#: a key directory holding this file: the billing API refused that key (401/403) and has not
#: accepted it since. What dead processes left there is adopted by a process whose key works for
#: the same destination (the mistyped key, then the right one): a refused key bills no account.
REFUSED = "key-refused"


def set_refused(directory: str, refused: bool) -> None:
    """Mark (or unmark) ``directory``'s key as refused by the billing API. Never raises."""
    path = os.path.join(directory, REFUSED)
    try:
        if refused:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        else:
            os.unlink(path)
    except OSError:
        pass


def refused_key_dirs(directory: str) -> list[str]:
    """The other key directories of ``directory``'s destination whose key the API refused."""
    parent, name = os.path.split(directory)
    slug, dash, fp = name.rpartition("-")
    if not dash or not is_fingerprint(fp):
        return []
    return [path for _fp, path in _key_dirs(parent, slug, fp) if os.path.exists(os.path.join(path, REFUSED))]


def legacy_dir(state_dir: str, destination: str) -> str:
    """Where versions without key fingerprints journaled ``destination`` whatever the key (not
    created here). Whoever sends to that destination still adopts what waits there, as before."""
    return os.path.join(state_dir, destination_slug(destination))


def key_dir(state_dir: str, destination: str, key_fingerprint: str) -> str:
    """The directory of ``destination`` under the key with that fingerprint (not created here)."""
    return os.path.join(state_dir, f"{destination_slug(destination)}-{key_fingerprint}")


def other_key_dirs(state_dir: str, destination: str, key_fingerprint: str | None) -> list[tuple[str, str]]:
    """``(fingerprint, path)`` of the directories of ``destination`` under keys other than
    ``key_fingerprint`` (none for a destination without a key)."""
    if key_fingerprint is None:
        return []
    return _key_dirs(state_dir, destination_slug(destination), key_fingerprint)


def _key_dirs(state_dir: str, slug: str, other_than: str) -> list[tuple[str, str]]:
    """``(fingerprint, path)`` of the key directories ``<slug>-<fingerprint>`` in ``state_dir``,
    but ``other_than``'s, sorted by name."""
    prefix = slug + "-"
    try:
        names = sorted(os.listdir(state_dir))
    except OSError:
        return []
    out = []
    for name in names:
        fp = name[len(prefix):]
        if name.startswith(prefix) and fp != other_than and is_fingerprint(fp):
            path = os.path.join(state_dir, name)
            if os.path.isdir(path):
                out.append((fp, path))
    return out


def fingerprint_suffix(value: object) -> str | None:
    """A sink's ``key_fingerprint`` as a directory suffix: 16 lowercase hex digits (any other
    non-empty string is hashed to that shape), or None when the sink has none."""
    if not isinstance(value, str) or not value:
        return None
    return value if is_fingerprint(value) else destination_slug(value)


def is_fingerprint(text: str) -> bool:
    return len(text) == 16 and all(c in "0123456789abcdef" for c in text)
