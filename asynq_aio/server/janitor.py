"""Keeps Redis memory bounded: deletes completed tasks whose retention has passed, trims each
queue's archive, and drops dead servers' entries from the server and worker indexes.

Cleanup must keep up with the work, not run at a fixed rate: a round keeps calling the delete script
while it finds full batches, so a queue that completes 10,000 tasks/s with a one-second retention is
cleaned as fast as it fills (Asynq, and this janitor before, removed at most 100 tasks per queue per
round: 12.5 tasks/s at the default interval). Each script call still handles at most ``batch`` IDs,
so Redis is never blocked for long, and queues take turns batch by batch, so one queue's backlog
does not starve the others. A round that stops at its time budget with work left starts the next
round at once; a round that deleted anything sleeps at most ``BUSY_INTERVAL``, so the
completed set of a busy queue holds about rate x (retention + 1 s); otherwise the janitor sleeps
``interval``. Sleeps have jitter, so several servers started together do not sweep in lock step.

Archives are trimmed with Asynq's limits (90 days, newest 10,000), hashes included (see
protocol/archive.py), so tasks the server archives are bounded just like tasks archived through the
Inspector.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Collection, Coroutine
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.lowlevel

from asynq_aio.server.fanout import each_node, within
from asynq_aio.server.storage import WorkerBroker

log = logging.getLogger("asynq_aio.server")

#: Longest sleep after a round that deleted anything: under load the completed set then holds about
#: rate x (retention + 1 s) instead of rate x (retention + interval).
BUSY_INTERVAL = 1.0
#: IDs per delete script call. 500 completed tasks (zset entry + hash) take well under a millisecond
#: of Redis time on the benchmark box (benchmarks/soak.py prints the longest call it saw).
DELETE_BATCH = 500
#: Longest wait for one call (a look at a node's batch of queues, or one queue's cleanup) before its
#: node is taken for stalled and left for the next round.
CALL_BUDGET = 5.0


@dataclass
class JanitorRound:
    """What one round did, for logs, tests and the soak benchmark."""

    deleted: int = 0
    trimmed: int = 0
    pruned: int = 0
    calls: int = 0
    backlog_left: bool = False


async def janitor_round(
    broker: WorkerBroker,
    queues: Collection[str],
    *,
    batch: int = DELETE_BATCH,
    budget: float = 5.0,
    call_budget: float = CALL_BUDGET,
) -> JanitorRound:
    """One round over every queue; stops early (``backlog_left``) after ``budget`` seconds, and
    gives one call ``call_budget`` seconds before taking its node for stalled.

    It first looks at the queues in batches per node (server/fanout.py): an idle queue costs one
    read in a batch, and a queue with work gets its first delete batch and its archive trim. Queues
    whose batch came back full then take turns, batch by batch, until they are done or the budget
    is spent. A stalled node is left for the next round with its queues; the others are cleaned."""
    out = JanitorRound()
    deadline = time.monotonic() + budget

    async def delete_batch(q: str) -> int:
        n = await broker.delete_expired_completed(q, batch=batch)
        out.calls += 1
        out.deleted += n
        return n

    async def clean(q: str) -> int:
        n = await delete_batch(q)
        try:
            out.trimmed += await broker.trim_archive(q)
        except Exception as exc:
            log.error("janitor: archive of queue %s: %s", q, exc, extra={"queue": q})
        return n

    def act(q: str, due: int) -> Coroutine[Any, Any, int] | None:
        return clean(q) if due else None

    # one snapshot per round: a live served set may change meanwhile
    first = await each_node(
        list(queues),
        nodes_of=broker.nodes_of,
        look=broker.needs_cleanup,
        act=act,
        budget=call_budget,
        what="janitor",
    )
    busy = [q for q, n in first.items() if n >= batch]
    while busy:
        if time.monotonic() >= deadline:
            out.backlog_left = True
            break
        still_full: list[str] = []
        for q in busy:
            try:
                n = await within(call_budget, delete_batch(q))
            except Exception as exc:
                log.error("janitor: queue %s: %s", q, exc, extra={"queue": q})
                continue
            if n >= batch:
                still_full.append(q)
        busy = still_full
    try:
        out.pruned = await broker.prune_dead_servers()
    except Exception as exc:
        log.error("janitor: server index: %s", exc)
    return out


async def janitor_loop(broker: WorkerBroker, queues: Collection[str], interval: float) -> None:
    """Run janitor rounds until cancelled: about every ``interval`` seconds (jittered ±25%), sooner while
    completed tasks are still expiring, and straight away when a round left a backlog. Each round
    reads ``queues`` afresh (a live served set brings the queues its patterns discover)."""
    while True:
        r = await janitor_round(broker, queues, budget=max(interval, 1.0))
        if r.deleted or r.trimmed or r.pruned:
            log.debug(
                "janitor: deleted %d expired completed, trimmed %d archived, pruned %d server entries",
                r.deleted,
                r.trimmed,
                r.pruned,
            )
        if r.backlog_left:
            await anyio.lowlevel.checkpoint()
            continue
        pause = min(interval, BUSY_INTERVAL) if r.deleted else interval
        await anyio.sleep(pause * random.uniform(0.75, 1.25))
