"""Recovers tasks whose lease expired: their worker died (SIGKILL, OOM, lost host) or stalled;
and heals IDs left in active with no lease at all.

Each expired task is claimed by one server atomically: the fail script re-checks that the lease is
still expired and still there, so two recoverers racing for one task move it once.
"""

from __future__ import annotations

import logging
import time

import anyio

from asynq_aio.protocol.broker import Broker

log = logging.getLogger("asynq_aio.server")

LEASE_EXPIRED = "task lease expired"


async def recover_once(broker: Broker, queues: list[str]) -> int:
    recovered = 0
    now = time.time()
    for q in queues:
        try:
            healed = await broker.heal_orphans(q)
            if healed:
                log.warning(
                    "requeued %d task(s) found in active without a lease in %s", healed, q, extra={"queue": q}
                )
            recovered += healed
            msgs = await broker.expired_leases(q, now)
            if not msgs:
                continue
            ops = [
                broker.fail_op(
                    m,
                    error=LEASE_EXPIRED,
                    archive=m.retried >= m.retry,
                    retry_at=now,
                    only_if_lease_expired_by=now,
                    now=now,
                )
                for m in msgs
            ]
            results = await broker.run(ops)
            n = sum(1 for r in results if r == 1)
            if n:
                log.warning("recovered %d task(s) with an expired lease in %s", n, q, extra={"queue": q})
            recovered += n
        except Exception as exc:
            log.error("recoverer: queue %s: %s", q, exc, extra={"queue": q})
    return recovered


async def recover_loop(broker: Broker, queues: list[str], interval: float) -> None:
    while True:
        await recover_once(broker, queues)
        await anyio.sleep(interval)
