"""The group aggregator: merges each due group's tasks into one task with the user's function.

Every round it reads each queue's groups (and reclaims aggregation sets whose server died), and for
each due group: moves the members into an aggregation set, calls ``group_aggregator(group, tasks)``,
and stores the returned task as pending in the same queue while deleting the set and its members, in
one script. An aggregator that raises or outlives the set's deadline leaves the set to be reclaimed
and aggregated again; nothing is lost and no merged task is stored twice.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Collection

import anyio

from asynq_aio._options import EnqueueOptions, prepare
from asynq_aio._task import Task
from asynq_aio.protocol.codec import TaskMessage
from asynq_aio.protocol.groups import SET_TIMEOUT, AggregationSet, GroupPolicy, GroupStore
from asynq_aio.server.config import Config, GroupAggregator

log = logging.getLogger("asynq_aio.server")

MAX_CONCURRENT_GROUPS = 4
MAX_INTERVAL = 1.0


def check_interval(policy: GroupPolicy) -> float:
    """How often groups are checked: a second at most, and well within the shortest time limit."""
    limits = [MAX_INTERVAL, policy.grace_period / 2]
    if policy.max_delay > 0:
        limits.append(policy.max_delay / 2)
    return max(min(limits), 0.05)


def merged_message(task: Task, queue: str, now: float) -> TaskMessage:
    """The message of an aggregator's result: the client's defaults (max retry 25, 30 min timeout)."""
    if not isinstance(task, Task):
        raise TypeError(f"group_aggregator must return a Task, got {type(task).__name__}")
    req, _ = prepare(task, EnqueueOptions(queue=queue), now=now)
    return req.msg


class Aggregator:
    """Merges the due groups of ``queues`` with the user's ``aggregate`` function, each merged task stored as
    pending in its group's queue (see the module docstring)."""

    def __init__(
        self,
        store: GroupStore,
        queues: Collection[str],
        aggregate: GroupAggregator,
        policy: GroupPolicy,
        *,
        set_timeout: float = SET_TIMEOUT,
        interval: float | None = None,
    ) -> None:
        self.store = store
        self.queues = queues  # read afresh every round: a live served set may grow or shrink
        self.aggregate = aggregate
        self.policy = policy
        self.set_timeout = set_timeout
        self.interval = check_interval(policy) if interval is None else interval

    async def run(self) -> None:
        """Check every ``interval`` seconds until cancelled."""
        while True:
            try:
                merged = await self.run_once()
                if merged:
                    log.debug("aggregated %d group set(s)", merged)
            except Exception as exc:
                log.error("aggregator: %s", exc)
            await anyio.sleep(self.interval)

    async def run_once(self) -> int:
        """One round over every queue; returns how many merged tasks were stored."""
        merged = 0
        limiter = anyio.CapacityLimiter(MAX_CONCURRENT_GROUPS)

        async def one(queue: str, group: str) -> None:
            nonlocal merged
            async with limiter:
                try:
                    merged += await self.aggregate_group(queue, group)
                except Exception as exc:
                    log.error(
                        "aggregator: queue %s group %s: %s",
                        queue,
                        group,
                        exc,
                        extra={"queue": queue, "group": group},
                    )

        for found in await self.store.scan(list(self.queues)):
            groups = found.groups
            if found.stale_sets:
                n = await self.store.reclaim(found.queue, found.stale_sets)
                if n:
                    log.warning(
                        "reclaimed %d stale aggregation set(s) in %s",
                        n,
                        found.queue,
                        extra={"queue": found.queue},
                    )
                    groups = await self.store.groups(found.queue)  # now with the reclaimed ones
            async with anyio.create_task_group() as tg:
                for group in groups:
                    tg.start_soon(one, found.queue, group)
        return merged

    async def aggregate_group(self, queue: str, group: str) -> int:
        """Aggregate ``group`` as many times as it is due (e.g. 10 tasks at max size 3 → 3 sets)."""
        done = 0
        while True:
            aset = await self.store.create_set(queue, group, self.policy, set_timeout=self.set_timeout)
            if aset is None:
                return done
            if not await self._merge(aset):
                return done
            done += 1

    async def _merge(self, aset: AggregationSet) -> bool:
        if not aset.messages:  # every member was deleted meanwhile (e.g. by an operator)
            return await self.store.finish(aset, None)
        tasks = [Task(m.type, m.payload, headers=dict(m.headers)) for m in aset.messages]
        # Stop a little before the deadline, after which another server may reclaim the set.
        margin = min(1.0, self.set_timeout / 10)
        budget = max(aset.deadline - self.store.clock() - margin, 0.0)
        result: Task | None = None
        with anyio.move_on_after(budget) as scope:
            try:
                out = self.aggregate(aset.group, tasks)
                result = await out if inspect.isawaitable(out) else out
            except anyio.get_cancelled_exc_class():
                if not scope.cancel_called:  # the server is stopping: hand the set back at once
                    with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                        try:
                            await self.store.release(aset)
                        except Exception as exc:
                            log.warning("could not release aggregation set %s: %s", aset.key, exc)
                raise
            except Exception as exc:
                log.error(
                    "group_aggregator failed for group %s of %s (%d tasks); the set is retried after "
                    "its deadline: %s: %s",
                    aset.group,
                    aset.queue,
                    len(tasks),
                    type(exc).__name__,
                    exc,
                    extra={"queue": aset.queue, "group": aset.group},
                )
                return False
        if scope.cancelled_caught or result is None:
            log.error(
                "group_aggregator for group %s of %s ran past the set's deadline or returned None",
                aset.group,
                aset.queue,
                extra={"queue": aset.queue, "group": aset.group},
            )
            return False
        stored = await self.store.finish(aset, merged_message(result, aset.queue, self.store.clock()))
        if not stored:
            log.warning(
                "aggregation set %s was reclaimed before it was finished; its tasks are aggregated again",
                aset.key,
            )
        return stored


def aggregator_for(store: GroupStore, queues: Collection[str], cfg: Config) -> Aggregator:
    """An Aggregator with the group settings of ``cfg``; raises ValueError if ``cfg.group_aggregator`` is
    not set."""
    if cfg.group_aggregator is None:
        raise ValueError("Config.group_aggregator is not set")
    policy = GroupPolicy(
        max_size=cfg.group_max_size, max_delay=cfg.group_max_delay, grace_period=cfg.group_grace_period
    )
    return Aggregator(store, queues, cfg.group_aggregator, policy)


async def aggregate_loop(store: GroupStore, queues: Collection[str], cfg: Config) -> None:
    """The server's background loop (started when ``Config.group_aggregator`` is set)."""
    await aggregator_for(store, queues, cfg).run()
