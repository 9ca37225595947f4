"""Recovers tasks whose lease expired: their worker died (SIGKILL, OOM, lost host) or stalled;
heals IDs left in active with no lease at all; and sweeps the state lists for tasks whose hash
``state`` disagrees with the list or zset they are in.

Each expired task is claimed by one server atomically: the fail script re-checks that the lease is
still expired and still there, so two recoverers racing for one task move it once.
"""

from __future__ import annotations

import logging
import time

import anyio

from asynq_aio.protocol.broker import SWEPT_STATES, Broker

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


class StateSweeper:
    """Walks every state list/zset of each queue a window of ``batch`` IDs per round, with a cursor
    per list kept between rounds (no SCAN, no full read of a large list), and reconciles each task
    whose hash ``state`` disagrees with where it is listed.

    No script of ours leaves such a task; a foreign writer, a hand edit or a script aborted half-way
    (Asynq's scripts on a migrating slot) can, and such a task would otherwise sit forever where no
    component looks for it. Each round costs at most ``len(SWEPT_STATES)`` range reads plus one
    pipelined HGET per sampled ID per queue, so a long list is covered over several rounds.
    """

    def __init__(self, broker: Broker, queues: list[str], batch: int = 100) -> None:
        self._broker = broker
        self._queues = queues
        self._batch = batch
        self._cursors: dict[tuple[str, str], int] = {}
        self.fixed = 0  # reconciled since start, for tests and operators

    async def sweep_once(self) -> int:
        fixed = 0
        for q in self._queues:
            for where in SWEPT_STATES:
                try:
                    fixed += await self._sweep(q, where)
                except Exception as exc:
                    log.error("state sweeper: queue %s, %s: %s", q, where, exc, extra={"queue": q})
        self.fixed += fixed
        return fixed

    async def _sweep(self, queue: str, where: str) -> int:
        start = self._cursors.get((queue, where), 0)
        sample = await self._broker.sample_states(queue, where, start, self._batch)
        # a short window means the end of the list: start over next round
        self._cursors[(queue, where)] = start + self._batch if len(sample) >= self._batch else 0
        suspects = [(tid, where) for tid, state in sample if state != where]
        if not suspects:
            return 0
        results = await self._broker.fix_states(queue, suspects)
        n = sum(1 for r in results if r > 0)
        if n:
            log.warning(
                "state sweeper reconciled %d task(s) listed in %s of %s whose hash disagreed",
                n,
                where,
                queue,
                extra={"queue": queue},
            )
        return n


async def recover_loop(
    broker: Broker,
    queues: list[str],
    interval: float,
    sweep_interval: float = 60.0,
    sweep_batch: int = 100,
) -> None:
    """Recover every ``interval``; sweep the state lists every ``sweep_interval`` (0 = never)."""
    sweeper = StateSweeper(broker, queues, sweep_batch)
    next_sweep = time.monotonic() + sweep_interval
    while True:
        await recover_once(broker, queues)
        if sweep_interval > 0 and time.monotonic() >= next_sweep:
            await sweeper.sweep_once()
            next_sweep = time.monotonic() + sweep_interval
        await anyio.sleep(interval)
