"""Per-queue work that one slow node must not hold up.

A queue's keys live on one master. Background components (forwarder, recoverer) used to visit the
queues one after another, so a stalled master held every queue behind it for the transport's whole
retry budget. Here each queue's call runs on its own, a bounded number at a time, each within a time
budget; a queue whose call fails or runs out of time is logged and left for the next round.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

log = logging.getLogger("asynq_aio.server")

T = TypeVar("T")

#: Queues worked on at once: enough to ride out a few stalled nodes, few enough that 1,000 queues
#: do not open 1,000 connections.
MAX_PARALLEL = 16


async def each_queue(
    queues: list[str],
    fn: Callable[[str], Awaitable[T]],
    *,
    budget: float,
    what: str,
    limit: int = MAX_PARALLEL,
) -> dict[str, T]:
    """``fn(queue)`` for every queue, at most ``limit`` at once, each within ``budget`` seconds.
    Returns the results of the queues that answered in time; the others are logged."""
    results: dict[str, T] = {}
    limiter = anyio.CapacityLimiter(max(1, limit))

    async def one(queue: str) -> None:
        async with limiter:
            with anyio.move_on_after(budget) as scope:
                try:
                    results[queue] = await fn(queue)
                except Exception as exc:
                    log.error("%s: queue %s: %s", what, queue, exc, extra={"queue": queue})
                    return
            if scope.cancelled_caught:
                log.error(
                    "%s: queue %s: no answer within %.1fs; its node may be stalled",
                    what,
                    queue,
                    budget,
                    extra={"queue": queue},
                )

    if len(queues) == 1:  # the common case: no task group needed
        await one(queues[0])
        return results
    async with anyio.create_task_group() as tg:
        for q in queues:
            tg.start_soon(one, q)
    return results
