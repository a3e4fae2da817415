"""A parent that initialises the meter, runs metered calls in a process pool, and exits.

    python -m tests.process.pools <fork|spawn|forkserver> <with|close|executor>

``with``: ``with Pool() as p`` (its exit terminates the workers with SIGTERM); ``close``:
``close()`` + ``join()``; ``executor``: ``ProcessPoolExecutor``. Prints the tokens the calls
returned. What the workers leave undelivered, the parent adopts and delivers before it exits.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import sys
from concurrent.futures import ProcessPoolExecutor

from tests.process import apps


def main() -> None:
    method, style = sys.argv[1], sys.argv[2]
    jobs = [(f"usr_{i % 3}", 2 + i % 5) for i in range(18)]
    ctx = mp.get_context(method)
    if style == "with":
        with ctx.Pool(2) as pool:
            units = pool.map(apps.task, jobs)
    elif style == "close":
        pool = ctx.Pool(2)
        units = pool.map(apps.task, jobs)
        pool.close()
        pool.join()
    else:
        with ProcessPoolExecutor(2, mp_context=ctx) as ex:
            units = list(ex.map(apps.task, jobs))
    print(json.dumps(sum(units)), flush=True)


if __name__ == "__main__":
    main()
