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
        next_due = min(known) if known else None
        sleep = max_sleep if next_due is None else min(max_sleep, max(0.0, next_due - time.time()))
        await anyio.sleep(max(sleep, 0.005))
