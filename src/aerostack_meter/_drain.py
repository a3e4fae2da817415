"""``aerostack-meter drain``: deliver everything left in the state directory, then exit.

It reads the same environment as ``import aerostack_meter.auto`` (``AEROSTACK_API_KEY``,
``AEROSTACK_BASE_URL``, ``AEROSTACK_METER_STATE_DIR``, ...), takes over every journal left by a
process that is no longer running (for that billing destination), delivers it, and exits 0 only
when nothing is left. For shutdown hooks (``ExecStopPost=``, a container's ``preStop``), cron, and
serverless platforms that freeze a process before its background thread is done.

Exit codes: 0 nothing left; 1 something is left (the API is down, refused the key, or a live
process still owns part of it: run it again later); 2 bad configuration.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import IO, Any

__all__ = ["drain"]


def drain(timeout: float | None = 60.0, *, retry_dead: bool = False,
          environ: Mapping[str, str] | None = None, out: IO[str] | None = None) -> int:
    from ._errors import ConfigError
    from ._journal import recover
    from ._journal_format import parse
    from ._meter import Meter

    out = out or sys.stdout
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
    t0 = time.monotonic()
    ok = meter.flush(timeout)
    st = meter.stats()
    dead_sent = dead_kept = 0
    if retry_dead and meter.dead_letters is not None:
        dead_sent, dead_kept, _bad = meter.dead_letters.retry(meter.sink.send)
    left = meter._reporter.pending
    meter.shutdown(0)
    # what other, live processes still own in this destination
    import pathlib

    others = 0
    for journal in pathlib.Path(where).glob("*.journal"):
        try:
            rec = recover(parse(journal.read_bytes(), final=True).records)
        except OSError:
            continue
        others += len(rec.events) + sum(r.n_events for r in rec.requests) + len(rec.usages)
    dead = 0
    if meter.dead_letters is not None:
        entries, _ = meter.dead_letters.read()
        dead = len(entries)
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
    if not ok or left:
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
    for p in problems:
        print(f"aerostack-meter drain: {p}", file=out)
    return 1 if problems else 0
