"""Run the synchronous liquidation engine for an async broker (``ccxt.async_support``).

``dust()`` and ``normalize()`` read positions, value them, re-read and place
orders one by one; that engine is written once, synchronously. For an async
broker it runs in a worker thread, and every coroutine a broker method returns
there is sent back to the caller's event loop and waited for. So
``await guard.dust()`` works on an async exchange without a second engine.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, TypeVar

T = TypeVar("T")
_loop: ContextVar[asyncio.AbstractEventLoop | None] = ContextVar("broker_guard_loop", default=None)


async def run_in_thread(fn: Callable[[], T]) -> T:
    """Run ``fn`` in a worker thread; coroutines it meets (via ``resolve``) run on this loop."""
    token = _loop.set(asyncio.get_running_loop())
    try:
        return await asyncio.to_thread(fn)  # copies the context, so the worker sees the loop
    finally:
        _loop.reset(token)


def resolve(value: Any) -> Any:
    """``value`` itself, or, when it is awaitable, its result from the caller's loop."""
    if not inspect.isawaitable(value):
        return value
    loop = _loop.get()
    if loop is None:
        if inspect.iscoroutine(value):
            value.close()  # never started: no "was never awaited" warning
        raise TypeError(
            "this broker is async: await the guard's dust(), normalize(), valued_positions() or "
            "find_dust()"
        )
    return asyncio.run_coroutine_threadsafe(_awaited(value), loop).result()


async def _awaited(value: Awaitable[T]) -> T:
    return await value
