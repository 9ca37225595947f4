"""Deletes completed tasks whose retention has passed, a bounded batch per queue per round."""

from __future__ import annotations

import logging

import anyio

from asynq_aio.protocol.broker import Broker

log = logging.getLogger("asynq_aio.server")


async def janitor_loop(broker: Broker, queues: list[str], interval: float) -> None:
    while True:
        for q in queues:
            try:
                await broker.delete_expired_completed(q)
            except Exception as exc:
                log.error("janitor: queue %s: %s", q, exc, extra={"queue": q})
        await anyio.sleep(interval)
