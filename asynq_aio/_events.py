"""Waiting for an asyncio event with a time limit: the one way the processor, the coalescer and the
result waiter do it.

Plain asyncio rather than an anyio cancel scope: the processor's idle and full-slot waits sit on the
path from a task's arrival to its handler's start, which runs on asyncio alone (server/stopper.py).
"""

from __future__ import annotations

import asyncio


async def wait_set(event: asyncio.Event, timeout: float | None) -> bool:
    """Wait until ``event`` is set or ``timeout`` seconds have passed (None: no limit); whether it
    is set.

    ``asyncio.timeout`` converts only its own cancellation into TimeoutError, so a cancellation of
    the caller (a server stopping its task group) arriving at the same moment still propagates."""
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return event.is_set()
    return True
