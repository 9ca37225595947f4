"""Moves scheduled and retry tasks to pending when they fall due.

Sleeps until the earliest due time it knows of (capped at ``forward_interval``, since other producers
may schedule earlier tasks meanwhile), rather than polling on a fixed period.
"""

from __future__ import annotations

import logging
import time

import anyio

from asynq_aio.protocol.broker import Broker

log = logging.getLogger("asynq_aio.server")


async def forward_loop(broker: Broker, queues: list[str], max_sleep: float) -> None:
    while True:
        next_due: float | None = None
        for q in queues:
            try:
                moved = await broker.forward(q)
                if moved:
                    log.debug("forwarded %d task(s) in %s", moved, q, extra={"queue": q})
                due = await broker.next_due(q)
            except Exception as exc:
                log.error("forwarder: queue %s: %s", q, exc, extra={"queue": q})
                continue
            if due is not None and (next_due is None or due < next_due):
                next_due = due
        sleep = max_sleep if next_due is None else min(max_sleep, max(0.0, next_due - time.time()))
        await anyio.sleep(max(sleep, 0.005))
