"""Keeps the queues a client enqueues to listed in ``asynq:queues``, beside the enqueue rather than
in front of it.

``asynq:queues`` lives in its own slot, so it cannot join a queue's enqueue script. The client used
to write it first and the task after: the first enqueue into a queue (and one a minute after that)
took two round trips, and in a cluster a stalled master holding ``asynq:queues`` failed enqueues into
queues on every other master once their minute was up, though their own masters were healthy. The
list only serves discovery (the inspector, Go's CLI and asynqmon, queue patterns); no worker needs it
to take a task from a queue it was told to serve.

So the registration is sent beside the task's write and awaited for at most ``wait`` seconds once
the task is stored. When it succeeds, as it does on a healthy Redis within that round trip, the
enqueue returns with its queue listed, as before. When it fails or hangs, the enqueue returns anyway
(its task is stored), the failure is logged, and the next enqueue into that queue tries again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

__all__ = ["REGISTER_EVERY", "REGISTER_WAIT", "QueueRegistry"]

#: How often (s) a queue a producer enqueues to is added to asynq:queues again.
REGISTER_EVERY = 60.0
#: The most (s) an enqueue whose task is stored waits for its queue's listing; a listing still in
#: flight then goes on in the background.
REGISTER_WAIT = 1.0


class QueueRegistry:
    """Which queues were listed lately, and the registrations in flight (one per Client, and one per
    Scheduler: both enqueue).

    ``register`` adds names to ``asynq:queues`` (retrying as the transport does); a failure is
    logged on ``log``. A queue is listed again at most every :data:`REGISTER_EVERY` seconds, so an
    operator's ``queue rm`` is healed by a later enqueue; :data:`REGISTER_WAIT` bounds how long an
    enqueue waits for its queue's listing after its own write is done."""

    def __init__(self, register: Callable[[list[str]], Awaitable[None]], log: logging.Logger) -> None:
        self._register = register
        self._log = log
        self._listed: dict[str, float] = {}  # queue -> monotonic time it was last listed
        self._running: dict[str, asyncio.Task[None]] = {}  # queue -> its registration in flight

    def start(self, queues: Sequence[str]) -> asyncio.Task[None] | None:
        """Begin listing those of ``queues`` that are due; returns what to :meth:`settle` after the
        write (None when every queue is listed already: the common case, kept cheap)."""
        now = time.monotonic()
        if len(queues) == 1 and now - self._listed.get(queues[0], -1e9) <= REGISTER_EVERY:
            return None
        due = [q for q in dict.fromkeys(queues) if now - self._listed.get(q, -1e9) > REGISTER_EVERY]
        if not due:
            return None
        fresh = [q for q in due if q not in self._running]
        if not fresh:
            return self._running[due[0]]  # another caller is listing it: wait for that one
        task = asyncio.get_running_loop().create_task(self._list(fresh))
        for q in fresh:
            self._running[q] = task
        return task

    async def _list(self, queues: list[str]) -> None:
        try:
            await self._register(queues)
        except Exception as exc:
            self._log.warning(
                "could not add queue(s) %s to asynq:queues: %s; inspectors and queue patterns do not "
                "list them until a later enqueue adds them (workers that name them serve them as usual)",
                ", ".join(queues),
                exc,
            )
        else:
            now = time.monotonic()
            for q in queues:
                self._listed[q] = now
        finally:
            for q in queues:
                if self._running.get(q) is asyncio.current_task():
                    del self._running[q]

    async def settle(self, registration: asyncio.Task[None] | None) -> None:
        """Wait up to :data:`REGISTER_WAIT` seconds for a registration :meth:`start` returned (it
        goes on in the background after that; a cancelled caller does not cancel it)."""
        if registration is None or registration.done():
            return
        await asyncio.wait({registration}, timeout=REGISTER_WAIT)

    async def aclose(self) -> None:
        """Stop the registrations still in flight (the connections are about to close)."""
        running = set(self._running.values())
        self._running.clear()
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running)
