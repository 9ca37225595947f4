"""Deletes completed tasks whose retention has passed and trims each queue's archive.

Both run in bounded batches per queue per round, so a huge backlog is worked off over several rounds
instead of in one long script that would block the Redis node.

Asynq trims the archive only inside its archive script and leaves the trimmed tasks' hashes behind;
here the janitor trims with the same limits (90 days, newest 10,000) and deletes the hashes too, so
tasks the server archives are bounded just like tasks archived through the Inspector.
"""

from __future__ import annotations

import logging

import anyio

from asynq_aio.protocol.admin import Admin
from asynq_aio.protocol.broker import Broker
from asynq_aio.protocol.keys import queue_keys

log = logging.getLogger("asynq_aio.server")


async def janitor_loop(broker: Broker, queues: list[str], interval: float) -> None:
    admin = Admin(broker.transport, clock=broker.clock)
    while True:
        for q in queues:
            try:
                await broker.delete_expired_completed(q)
                await admin.trim_archive(queue_keys(q))
            except Exception as exc:
                log.error("janitor: queue %s: %s", q, exc, extra={"queue": q})
        await anyio.sleep(interval)
