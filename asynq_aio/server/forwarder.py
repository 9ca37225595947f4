"""Moves scheduled and retry tasks to pending when they fall due.

Sleeps until the earliest due time it knows of (capped at ``forward_interval``, since other producers
may schedule earlier tasks meanwhile), rather than polling on a fixed period. Each round first reads
the queues' earliest due times, a batch of a node's queues at a time, and forwards only the queues
with something due, so an idle queue costs one read in a batch a round. The nodes are looked at
side by side (server/fanout.py), so a stalled master delays only its own queues.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Coroutine
from typing import Any

import anyio

from asynq_aio.server.fanout import each_node
from asynq_aio.server.storage import WorkerBroker

log = logging.getLogger("asynq_aio.server")

#: The sleep (s) when a task is due already at the end of a round (see sleep_until_due).
PAST_DUE_PAUSE = 0.005


async def forward_loop(
    broker: WorkerBroker, queues: Collection[str], max_sleep: float, budget: float = 5.0
) -> None:
    """Forward due tasks of every queue, then sleep until the earliest known due time, at most ``max_sleep``
    seconds; each queue gets ``budget`` seconds per round. Runs until cancelled. ``queues`` is read
    afresh every round, so a live served set (queue patterns) brings its new queues in."""

    async def forward(q: str) -> float | None:
        moved = await broker.forward(q)
        if moved:
            log.debug("forwarded %d task(s) in %s", moved, q, extra={"queue": q})
        (due,) = await broker.next_dues([q])
        if isinstance(due, Exception):
            raise due
        return due

    def act(q: str, due: float | None) -> Coroutine[Any, Any, float | None] | None:
        return forward(q) if due is not None and due <= time.time() else None

    while True:
        # Look before forwarding: an idle queue costs one read in a batch of a node's queues a
        # round, instead of a call of its own (at 1,000 queues the forwarder is most of an idle
        # worker's Redis load and, call by call, held up pick-ups in the worker's event loop)
        dues = await each_node(
            list(queues),
            nodes_of=broker.nodes_of,
            look=broker.next_dues,
            act=act,
            budget=budget,
            what="forwarder",
        )
        known = [d for d in dues.values() if d is not None]
        await anyio.sleep(sleep_until_due(min(known) if known else None, time.time(), max_sleep))


def sleep_until_due(next_due: float | None, now: float, max_sleep: float) -> float:
    """How long the forwarder sleeps before its next round: until the earliest due time (at most
    ``max_sleep``).

    uvloop's timers count whole milliseconds and fire up to ~0.6 ms early about a third of the
    time; a round that wakes before its task is due moves nothing and sleeps again for the rest,
    however short (it used to sleep at least 5 ms, which a task due then waited too). A task due
    already when the round ends (it fell due during the round, or the round could not move it)
    gets :data:`PAST_DUE_PAUSE`, so a task that cannot be moved is not polled in a tight loop."""
    if next_due is None:
        return max_sleep
    wait = next_due - now
    if wait <= 0:
        return PAST_DUE_PAUSE
    return min(max_sleep, wait)
