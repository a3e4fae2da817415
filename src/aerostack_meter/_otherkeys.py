"""Usage left for our destination under other API keys: never delivered with ours; counted, said once.

Each API key has its own sub-directory of the state directory (``_paths.destination_dir``), so a
process never adopts what was journaled under another key. When it starts, it looks at the
directories of the same destination under other keys: what dead processes left there waits for a
process with that key (``AEROSTACK_API_KEY=<that key> aerostack-meter drain``). It is counted in
``stats().awaiting_key`` and logged once, naming the keys by fingerprint (never the key). Only an
operator moves it to another key (``aerostack-meter drain --adopt-key <fingerprint>``: a rotated
and revoked key), except for a key the billing API refused (401/403: a mistyped one), whose
leftovers any process with a working key adopts (``_paths.REFUSED``).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from ._journal import adopt_dead
from ._log import log_once
from ._paths import REFUSED, other_key_dirs

__all__ = ["waiting_under_other_keys"]


def waiting_under_other_keys(state_dir: str, destination: str, key_fingerprint: str | None,
                             counters: Any) -> dict[str, int]:
    """Events that dead processes left for ``destination`` under other keys, by key fingerprint.

    Reads only (nothing on disk changes); live processes' journals are theirs and not counted.
    Sets ``stats().awaiting_key`` to the total and warns once when it is not zero.
    """
    waiting: dict[str, int] = {}
    for fp, path in other_key_dirs(state_dir, destination, key_fingerprint):
        if os.path.exists(os.path.join(path, REFUSED)):
            continue  # a key the API refused: adopted by this process (JournalStore.adopt)
        try:
            n = adopt_dead(path, None, None).n_events
        except Exception:  # bad state never stops the app
            counters.add("internal_errors")
            continue
        if n:
            waiting[fp] = n
    total = sum(waiting.values())
    counters.set_gauge("awaiting_key", total)
    if total:
        log_once("awaiting_key", logging.WARNING,
                 "aerostack_meter: %d event(s) for %s were journaled by processes that used another "
                 "API key (key fingerprint %s) and are not sent with this key; deliver them with "
                 "that key: AEROSTACK_API_KEY=<that key> aerostack-meter drain; or, if that key was "
                 "mistyped or revoked and this one bills the same account, with this one: "
                 "aerostack-meter drain --adopt-key <fingerprint> (stats().awaiting_key)",
                 total, destination, ", ".join(f"{fp}: {n}" for fp, n in sorted(waiting.items())))
    return waiting
