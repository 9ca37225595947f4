"""Per-queue work that one slow node must not hold up.

A queue's keys live on one master. Background components (forwarder, recoverer) used to visit the
queues one after another, so a stalled master held every queue behind it for the transport's whole
retry budget. Here each queue's call runs on its own, a bounded number at a time, each within a time
budget; a queue whose call fails or runs out of time is logged and left for the next round.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import anyio

log = logging.getLogger("asynq_aio.server")

T = TypeVar("T")


class BudgetExceeded(TimeoutError):
    """A bounded Redis call did not finish within its budget."""


async def within(budget: float, coro: Coroutine[Any, Any, T]) -> T:
    """Await ``coro`` for at most ``budget`` seconds; raise :class:`BudgetExceeded` after that.

    The call runs in a task of its own, which is cancelled at the deadline, rather than under a
    cancel scope of the caller: redis-py's own socket timeouts are asyncio timeouts, and a cancel
    scope whose deadline races one of them can leave a stray cancellation that escapes into the
    caller's loop and silently ends its whole task group (seen with a stalled master: the
    heartbeat, forwarder and recoverer all stopped). Here only the inner task can be hit.

    A call given up on is cancelled and waited for (briefly) before this returns or raises, so no
    call outlives its caller: one left running would still hold a connection when the caller goes
    on to close its client, and that connection would be left for the garbage collector.
    """
    task = asyncio.ensure_future(coro)
    try:
        done, _ = await asyncio.wait({task}, timeout=budget)
    except BaseException:
        await _reap(task)
        raise
    if not done:
        await _reap(task)
        raise BudgetExceeded(f"no answer within {budget:.1f}s")
    if task.cancelled():
        raise BudgetExceeded("the call was cancelled")
    return task.result()


#: How long a cancelled call may take to unwind (redis-py drops the connection at once).
REAP_TIMEOUT = 1.0


async def _reap(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` and wait up to REAP_TIMEOUT for it to end, shielded from the caller's own
    cancellation (which is why we are here); its outcome is read so nothing is logged as lost."""
    task.cancel()
    with anyio.CancelScope(shield=True):
        await asyncio.wait({task}, timeout=REAP_TIMEOUT)
    if task.done() and not task.cancelled():
        task.exception()


#: Queues worked on at once: enough to ride out a few stalled nodes, few enough that 1,000 queues
#: do not open 1,000 connections.
MAX_PARALLEL = 16


async def each_queue(
    queues: list[str],
    fn: Callable[[str], Coroutine[Any, Any, T]],
    *,
    budget: float,
    what: str,
    limit: int = MAX_PARALLEL,
) -> dict[str, T]:
    """``fn(queue)`` for every queue, at most ``limit`` at once, each within ``budget`` seconds.
    Returns the results of the queues that answered in time; the others are logged."""
    results: dict[str, T] = {}

    async def one(queue: str) -> None:
        try:
            results[queue] = await within(budget, fn(queue))
        except BudgetExceeded as exc:
            log.error("%s: queue %s: %s; its node may be stalled", what, queue, exc, extra={"queue": queue})
        except Exception as exc:
            log.error("%s: queue %s: %s", what, queue, exc, extra={"queue": queue})

    if len(queues) == 1:  # the common case: no task group needed
        await one(queues[0])
        return results
    # ``limit`` workers share one iterator of the queues, rather than one task per queue behind a
    # limiter: starting an anyio task costs ~45 us, so 1,000 of them at once held the event loop
    # for tens of milliseconds each round, and a pick-up that fell into it waited.
    todo = iter(queues)

    async def worker() -> None:
        for queue in todo:
            await one(queue)

    async with anyio.create_task_group() as tg:
        for _ in range(min(max(1, limit), len(queues))):
            tg.start_soon(worker)
    return results
