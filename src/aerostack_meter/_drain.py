"""``aerostack-meter drain``: deliver everything left in the state directory, then exit.

It reads the same environment as ``import aerostack_meter.auto`` (``AEROSTACK_API_KEY``,
``AEROSTACK_BASE_URL``, ``AEROSTACK_METER_STATE_DIR``, ...), takes over every journal left by a
process that is no longer running (for that billing destination and that API key: usage journaled
under another key is only ever sent with that key), delivers it, and exits 0 only when nothing is
left. For shutdown hooks (``ExecStopPost=``, a container's ``preStop``), cron, and serverless
platforms that freeze a process before its background thread is done.

Exit codes: 0 nothing left; 1 something is left (the API is down, refused the key, a live process
still owns part of it: run it again later; or usage waits for another API key: run it with that
key); 2 bad configuration.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import IO, Any

__all__ = ["drain"]


def drain(timeout: float | None = 60.0, *, retry_dead: bool = False,
          environ: Mapping[str, str] | None = None, out: IO[str] | None = None,
          adopt_keys: Sequence[str] = ()) -> int:
    """``adopt_keys``: fingerprints of other keys whose leftovers for this base URL are delivered
    with this key too (an operator's choice: a mistyped key, or a rotated and revoked one)."""
    from ._deadletter import DeadLetters
    from ._errors import ConfigError
    from ._journal import recover
    from ._journal_format import parse
    from ._meter import Meter
    from ._otherkeys import waiting_under_other_keys
    from ._paths import fingerprint_suffix, is_fingerprint, key_dir
    from ._stats import Counters
    from ._store import JournalStore

    out = out or sys.stdout
    bad = [fp for fp in adopt_keys if not is_fingerprint(fp)]
    if bad:
        # (not echoed: it may be a key given by mistake)
        print("aerostack-meter drain: --adopt-key takes a key fingerprint (16 lowercase hex digits, "
              "as the warning names it), never the key itself", file=sys.stderr)
        return 2
    env_options: dict[str, Any] = {} if environ is None else {"environ": environ}
    try:
        meter = Meter(instrument=False, flush_interval=0.05, exit_timeout=0.0, **env_options)
    except ConfigError as exc:
        print(f"aerostack-meter drain: {exc}", file=sys.stderr)
        return 2
    if meter.state_dir is None:
        print("aerostack-meter drain: no usable state directory (durable mode is off or the "
              "directory cannot be written); nothing to drain", file=sys.stderr)
        meter.shutdown(0)
        return 1
    where = meter.state_dir
    store = meter._reporter.store
    fp = fingerprint_suffix(getattr(meter.sink, "key_fingerprint", None))
    destination = getattr(meter.sink, "destination", None)
    if adopt_keys and (fp is None or not isinstance(destination, str) or not isinstance(store, JournalStore)):
        print("aerostack-meter drain: --adopt-key needs an API key (AEROSTACK_API_KEY) to deliver "
              "with", file=sys.stderr)
        meter.shutdown(0)
        return 2
    t0 = time.monotonic()
    for other in adopt_keys:
        if other == fp or not isinstance(store, JournalStore) or not isinstance(destination, str):
            continue
        n = store.adopt_other(key_dir(os.path.dirname(where), destination, other))
        print(f"aerostack-meter drain: {n} event(s) journaled under key fingerprint {other} are "
              "delivered with this key", file=out)
    ok = meter.flush(timeout)
    st = meter.stats()
    dead_sent = dead_kept = 0
    stores = [meter.dead_letters] if meter.dead_letters is not None else []
    if isinstance(store, JournalStore) and store.legacy is not None:
        stores.append(DeadLetters(store.legacy))  # refused before key fingerprints: as before
    if retry_dead:
        for letters in stores:
            sent, kept, _bad = letters.retry(meter.sink.send)
            dead_sent += sent
            dead_kept += kept
    left = meter._reporter.pending
    meter.shutdown(0)
    # what other, live processes still own in this destination
    import pathlib

    others = 0
    for journal in pathlib.Path(where).glob("*.journal"):
        try:
            others += recover(parse(journal.read_bytes(), final=True).records).n_events
        except OSError:
            continue
    dead = sum(len(letters.read()[0]) for letters in stores)
    waiting = (waiting_under_other_keys(os.path.dirname(where), destination, fp, Counters())
               if st.awaiting_key and isinstance(destination, str) else {})
    print(f"aerostack-meter drain: {where}: delivered {st.events_sent} event(s) in "
          f"{st.requests_sent} request(s) in {time.monotonic() - t0:.1f} s"
          + (f"; resent {dead_sent} dead letter(s), {dead_kept} refused again" if retry_dead else ""),
          file=out)
    problems = []
    if st.awaiting_price:
        problems.append(f"{st.awaiting_price} call(s) metered with metrics=\"cost\" cannot be priced "
                        "here: install aerostack-meter[cost] (the price table) and run it again")
    if st.paused:
        problems.append("the billing API refused the API key (401/403): fix AEROSTACK_API_KEY")
    unpriced_only = st.awaiting_price and left <= st.awaiting_price and not st.paused
    if (not ok or left) and not unpriced_only:  # (the unpriced calls are said above)
        why = ("delivery is paused until the key is fixed" if st.paused
               else "the billing API did not accept them in time")
        problems.append(f"{left} event(s) not delivered yet ({why}); they stay on disk")
    elif others:
        problems.append(f"{others} event(s) belong to processes still running; they deliver them")
    if dead and not retry_dead:
        problems.append(f"{dead} request(s) in the dead-letter store (refused by the API; "
                        "`aerostack-meter drain --retry-dead` resends them)")
    elif dead_kept:
        problems.append(f"{dead_kept} dead letter(s) refused again")
    if waiting:
        problems.append(
            f"{sum(waiting.values())} event(s) for this base URL were journaled under another API key "
            f"(key fingerprint {', '.join(f'{k}: {n}' for k, n in sorted(waiting.items()))}; this "
            f"key's is {fp}) and are never sent with this one: run `AEROSTACK_API_KEY=<that key> "
            "aerostack-meter drain`, or, if that key was mistyped or revoked and this one bills "
            "the same account, `aerostack-meter drain --adopt-key <fingerprint>` with this one")
    for p in problems:
        print(f"aerostack-meter drain: {p}", file=out)
    return 1 if problems else 0
