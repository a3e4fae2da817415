"""Helpers both providers' tests use: sync/async twins written once, and a cancelled reader."""

from __future__ import annotations

import asyncio
import gc
import inspect
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

MODES = ["sync", "async"]
USER = [{"role": "user", "content": "tell me about the quiet harbour town"}]


async def resolve(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def is_async_iterable(obj: Any) -> bool:
    return hasattr(obj, "__aiter__") and not hasattr(obj, "__next__")


async def drain(stream: Any, limit: int | None = None, into: list[Any] | None = None) -> list[Any]:
    """Items of a sync or async stream (the first ``limit`` only, then stop reading), appended
    to ``into`` as they arrive (so a caller keeps what came before an error)."""
    out: list[Any] = [] if into is None else into
    if is_async_iterable(stream):
        async for item in stream:
            out.append(item)
            if limit is not None and len(out) >= limit:
                break
    else:
        for item in stream:
            out.append(item)
            if limit is not None and len(out) >= limit:
                break
    return out


async def close(stream: Any) -> None:
    await resolve(stream.close())


async def cancel_while_reading(read: Callable[[Callable[[Any], None]], Awaitable[None]],
                               after: int) -> list[Any]:
    """Run ``read(keep)`` in a task, cancel it once it has kept ``after`` items, check that the
    cancellation reached it, and return what it kept."""
    got: list[Any] = []
    reading = asyncio.Event()

    def keep(item: Any) -> None:
        got.append(item)
        if len(got) >= after:
            reading.set()

    task = asyncio.ensure_future(read(keep))
    await asyncio.wait_for(reading.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return got


def collect_garbage() -> None:
    """Collect what a test dropped (clients, streams) at its end, with ResourceWarnings ignored:
    CPython 3.11 can fail to compile (SystemError) when a ResourceWarning-as-error is raised by a
    finalizer that the cyclic GC runs in the middle of the compiler."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect(1)
