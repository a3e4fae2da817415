"""The one way we open an SQLite file: autocommit, any thread, WAL, a busy timeout."""

from __future__ import annotations

import sqlite3
from typing import Literal

__all__ = ["connect"]


def connect(
    path: str,
    *,
    timeout: float = 30.0,
    synchronous: Literal["OFF", "NORMAL", "FULL"] = "NORMAL",
) -> sqlite3.Connection:
    """Open `path` in autocommit mode, shareable across threads (callers hold their own lock),
    in WAL mode so several processes can share the file, waiting up to `timeout` seconds for a lock."""
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
    return conn
