"""Recovers tasks whose lease expired: their worker died (SIGKILL, OOM, lost host) or stalled;
heals IDs left in active with no lease at all; and sweeps the state lists for tasks whose hash
``state`` disagrees with the list or zset they are in.

Each expired task is claimed by one server atomically: the fail script re-checks that the lease is
still expired and still there, so two recoverers racing for one task move it once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Coroutine
from typing import Any

import anyio

from asynq_aio._task import Task
from asynq_aio.protocol.broker import SWEPT_STATES, MalformedRecord
from asynq_aio.server.fanout import each_node
from asynq_aio.server.storage import WorkerBroker

log = logging.getLogger("asynq_aio.server")

LEASE_EXPIRED = "task lease expired"


#: Go's recoverer only takes leases that expired this long ago, against clock skew between the
#: server that wrote a lease and the one that reads it.
DEFAULT_RECOVERY_SKEW = 30.0
#: Expired leases read and failed per call; a round keeps calling while it finds full batches.
RECOVER_BATCH = 100
#: Longest a queue's sweep (a window of each state list) may take before its node is taken for
#: stalled and left for the next sweep.
SWEEP_BUDGET = 5.0


class LeaseExpiredError(Exception):
    """The error a recovered task is retried or archived with (Go's ``ErrLeaseExpired``)."""

    def __init__(self) -> None:
        super().__init__(LEASE_EXPIRED)


RetryDelay = Callable[[int, BaseException, Task], float]


def _no_delay(retried: int, error: BaseException, task: Task) -> float:
    return 0.0


async def recover_once(
    broker: WorkerBroker,
    queues: Collection[str],
    *,
    skew: float = 0.0,
    retry_delay: RetryDelay = _no_delay,
    batch: int = RECOVER_BATCH,
    budget: float = 10.0,
) -> int:
    """Retry (or archive, when out of retries) every task whose lease expired ``skew`` seconds ago
    or earlier, as Go's recoverer does: the retry is scheduled through ``retry_delay`` (the
    server's ``retry_delay_func``), so a task that kills its worker is not re-run fleet-wide at once.
    A record that cannot be decoded is archived as it is (it can never run) instead of blocking the
    queue's recovery round after round."""

    async def recover_queue(q: str) -> int:
        recovered = 0
        healed = await broker.heal_orphans(q)
        if healed:
            log.warning(
                "requeued %d task(s) found in active without a lease in %s", healed, q, extra={"queue": q}
            )
        recovered += healed
        while True:
            now = time.time()
            cutoff = now - skew
            found, n = await _recover_batch(broker, q, now, cutoff, retry_delay, batch)
            recovered += n
            if n:
                log.warning("recovered %d task(s) with an expired lease in %s", n, q, extra={"queue": q})
            if found < batch or n == 0:
                return recovered

    def act(q: str, holds: int) -> Coroutine[Any, Any, int] | None:
        return recover_queue(q) if holds else None

    # an idle queue (nothing in active, no lease) costs one read in a batch of its node's queues;
    # the nodes side by side, each call within a budget: a stalled master delays only its own queues
    done = await each_node(
        list(queues),
        nodes_of=broker.nodes_of,
        look=broker.holds_tasks,
        act=act,
        budget=budget,
        what="recoverer",
    )
    return sum(done.values())


async def _recover_batch(
    broker: WorkerBroker, queue: str, now: float, cutoff: float, retry_delay: RetryDelay, batch: int
) -> tuple[int, int]:
    """One batch of expired leases: (how many were found, how many this call moved)."""
    expired = await broker.expired_leases(queue, cutoff, limit=batch)
    if not expired:
        return 0, 0
    ops = []
    error = LeaseExpiredError()
    for item in expired:
        if isinstance(item, MalformedRecord):
            log.error(
                "task %s in %s has an undecodable record; archiving it: %s",
                item.task_id,
                queue,
                item.reason,
                extra={"queue": queue, "task_id": item.task_id},
            )
            ops.append(broker.archive_malformed_op(item, only_if_lease_expired_by=cutoff))
            continue
        msg = item
        archive = msg.retried >= msg.retry
        retry_at = now
        if not archive:
            try:
                delay = retry_delay(msg.retried, error, Task(msg.type, msg.payload))
            except Exception as exc:  # a user function must not lose the task
                log.error("retry_delay_func failed for a recovered task, using 60s: %s", exc)
                delay = 60.0
            retry_at = now + max(0.0, delay)
        ops.append(
            broker.fail_op(
                msg,
                error=LEASE_EXPIRED,
                archive=archive,
                retry_at=retry_at,
                only_if_lease_expired_by=cutoff,
                now=now,
            )
        )
    results = await broker.run(ops)
    return len(expired), sum(1 for r in results if r == 1)


class StateSweeper:
    """Walks every state list/zset of each queue a window of ``batch`` IDs per round, with a cursor
    per list kept between rounds (no SCAN, no full read of a large list), and reconciles each task
    whose hash ``state`` disagrees with where it is listed.

    No script of ours leaves such a task; a foreign writer, a hand edit or a script aborted half-way
    (Asynq's scripts on a migrating slot) can, and such a task would otherwise sit forever where no
    component looks for it. Each round costs at most ``len(SWEPT_STATES)`` range reads plus one
    pipelined HGET per sampled ID per queue, so a long list is covered over several rounds.
    """

    def __init__(
        self, broker: WorkerBroker, queues: Collection[str], batch: int = 100, budget: float = SWEEP_BUDGET
    ) -> None:
        self._broker = broker
        self._queues = queues
        self._batch = batch
        self._budget = budget
        self._cursors: dict[tuple[str, str], int] = {}
        self.fixed = 0  # reconciled since start, for tests and operators

    async def sweep_once(self) -> int:
        """Sweep one window of every state list of every queue; returns how many tasks were
        reconciled. A failing list is logged and skipped, not raised.

        The queues are taken node by node, the nodes side by side, each queue's sweep within the
        budget (server/fanout.py): a node that does not answer is left for the next sweep with its
        queues. The sweep runs between the recoverer's rounds, so when it went queue by queue a
        stalled master held up the recovery of every queue for as long as its calls kept failing."""

        async def every_queue(batch: list[str]) -> list[bool | Exception]:
            return [True] * len(batch)  # nothing cheap to look at first: every queue gets its windows

        async def sweep_queue(q: str) -> int:
            fixed = 0
            for where in SWEPT_STATES:
                try:
                    fixed += await self._sweep(q, where)
                except Exception as exc:
                    log.error("state sweeper: queue %s, %s: %s", q, where, exc, extra={"queue": q})
            return fixed

        def act(q: str, _: int) -> Coroutine[Any, Any, int]:
            return sweep_queue(q)

        done = await each_node(
            list(self._queues),  # a live served set may change while this round awaits
            nodes_of=self._broker.nodes_of,
            look=every_queue,
            act=act,
            budget=self._budget,
            what="state sweeper",
        )
        fixed = sum(done.values())
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
    broker: WorkerBroker,
    queues: Collection[str],
    interval: float,
    sweep_interval: float = 60.0,
    sweep_batch: int = 100,
    *,
    skew: float = DEFAULT_RECOVERY_SKEW,
    retry_delay: RetryDelay = _no_delay,
) -> None:
    """Recover every ``interval``; sweep the state lists every ``sweep_interval`` (0 = never). Each
    round reads ``queues`` afresh (a live served set brings the queues its patterns discover)."""
    sweeper = StateSweeper(broker, queues, sweep_batch)
    next_sweep = time.monotonic() + sweep_interval
    while True:
        await recover_once(broker, queues, skew=skew, retry_delay=retry_delay)
        if sweep_interval > 0 and time.monotonic() >= next_sweep:
            await sweeper.sweep_once()
            next_sweep = time.monotonic() + sweep_interval
        await anyio.sleep(interval)
