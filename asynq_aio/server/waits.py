"""Waiting for an event with a time limit, in plain asyncio: the processor's idle and full-slot waits.

These waits sit on the path from a task's arrival to its handler's start, which runs on asyncio
alone (see stopper.py); an anyio cancel scope per wait would bring the second concurrency model
back into it.
"""

from __future__ import annotations

import asyncio


async def wait_set(event: asyncio.Event, timeout: float) -> bool:
    """Wait until ``event`` is set or ``timeout`` seconds have passed; whether it is set.

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
