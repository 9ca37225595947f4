"""Background work over every queue that one slow node must not hold up.

A queue's keys live on one master. Background components (forwarder, recoverer, janitor) once visited the
queues one after another, so a stalled master held every queue behind it for the transport's whole
retry budget. Here the queues are grouped by node and each node is worked on by itself, every call
within a time budget; a node whose call fails or runs out of time is logged and left for the next
round, and the other nodes go on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
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


#: Queues one batched look covers. A batch is built in one step of the event loop and its replies
#: decoded in another, so this bounds how long a pick-up can wait behind one: a look at 100 queues
#: cost ~0.85 ms of CPU, at 25 ~0.35 ms, and at 1,000 idle queues p99 pick-up was 3.1-3.3 ms with 25
#: against 4.8-7.6 ms with 100 (docs/benchmarks.md).
PROBE_CHUNK = 25

A = TypeVar("A")


async def each_node(
    queues: list[str],
    *,
    nodes_of: Callable[[list[str]], Awaitable[list[str]]],
    look: Callable[[list[str]], Coroutine[Any, Any, Sequence[A | Exception]]],
    act: Callable[[str, A], Coroutine[Any, Any, A] | None],
    budget: float,
    what: str,
    chunk: int = PROBE_CHUNK,
) -> dict[str, A]:
    """Look at every queue in batches, and act on the queues whose answer calls for it.

    ``look(batch)`` answers for ``chunk`` queues of one node in one call; ``act(queue, answer)``
    returns the call to make for that queue (its result replaces the answer) or None when there is
    nothing to do. Returns each queue's answer; a queue whose look or act failed is left out (and
    logged).

    Why batches, one call at a time per node: this used to be one call per queue, sixteen queues
    at once. At 1,000 idle queues those calls kept the event loop's ready queue full for a good
    part of every forwarder round, and a pick-up that fell into a round waited behind them at each
    of its steps.

    A node's queues are taken one batch after another, the nodes side by side, each call within
    ``budget`` seconds: a node whose call fails or times out is left for the next round (the rest of
    its queues with it: they would wait out the same budget), and the other nodes go on.
    """
    results: dict[str, A] = {}
    try:
        names = await nodes_of(queues)
    except Exception as exc:
        log.error("%s: cannot tell which node holds which queue: %s", what, exc)
        return results
    by_node: dict[str, list[str]] = {}
    for queue, node in zip(queues, names, strict=True):
        by_node.setdefault(node, []).append(queue)

    async def on_node(node: str, mine: list[str]) -> None:
        size = max(1, chunk)
        for start in range(0, len(mine), size):
            batch = mine[start : start + size]
            try:
                answers = await within(budget, look(batch))
            except Exception as exc:
                log.error(
                    "%s: node %s: %s; its %d queue(s) wait for the next round",
                    what,
                    node or "redis",
                    exc,
                    len(mine) - start,
                )
                return
            for queue, answer in zip(batch, answers, strict=True):
                if isinstance(answer, Exception):
                    log.error("%s: queue %s: %s", what, queue, answer, extra={"queue": queue})
                    continue
                call = act(queue, answer)
                if call is None:
                    results[queue] = answer
                    continue
                try:
                    results[queue] = await within(budget, call)
                except BudgetExceeded as exc:
                    log.error(
                        "%s: queue %s: %s; its node (%s) may be stalled: its other queues wait for the "
                        "next round",
                        what,
                        queue,
                        exc,
                        node or "redis",
                        extra={"queue": queue},
                    )
                    return
                except Exception as exc:
                    log.error("%s: queue %s: %s", what, queue, exc, extra={"queue": queue})

    groups = list(by_node.items())
    if len(groups) == 1:
        await on_node(*groups[0])
        return results
    async with anyio.create_task_group() as tg:
        for node, mine in groups:
            tg.start_soon(on_node, node, mine)
    return results
