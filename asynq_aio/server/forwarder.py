"""Moves scheduled and retry tasks to pending when they fall due.

Sleeps until the earliest due time it knows of (capped at ``forward_interval``, since other producers
may schedule earlier tasks meanwhile), rather than polling on a fixed period. Each round first reads
a queue's earliest due time and forwards only when something is due, so an idle queue costs one
round trip of two reads a round. Queues are forwarded
side by side (server/fanout.py), so a stalled master delays only its own queues.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection

import anyio

from asynq_aio.server.fanout import each_queue
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

    async def forward_one(q: str) -> float | None:
        # Look before forwarding: an idle queue costs one round trip of two reads a round instead
        # of three round trips (at 1,000 queues the forwarder is most of an idle worker's Redis load)
        due = await broker.next_due(q)
        if due is None or due > time.time():
            return due
        moved = await broker.forward(q)
        if moved:
            log.debug("forwarded %d task(s) in %s", moved, q, extra={"queue": q})
        return await broker.next_due(q)

    while True:
        dues = await each_queue(list(queues), forward_one, budget=budget, what="forwarder")
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
