"""Inspector: the read/admin API that the CLI and dashboards use (Go Asynq's ``Inspector``).

Queues, per-state counts and daily history, groups, task listings and task details, single and bulk
delete/run/archive, queue deletion, pause, cancellation, live servers and scheduler entries, and where
a queue lives in a Redis Cluster. All Redis I/O is in :mod:`asynq_aio.protocol.admin`.

Pages are numbered from 1, as in Go's ``asynq.Page``; the default page size is 30.
"""

from __future__ import annotations

from asynq_aio._closing import AsyncClosing
from asynq_aio._connection import RedisClient, RedisConnOpt, RetryPolicy
from asynq_aio._errors import FailedPreconditionError, QueueNotFoundError, TaskNotFoundError
from asynq_aio._inspection import (
    CancelOutcome,
    ClusterNodeRef,
    DailyStats,
    GroupInfo,
    QueueInfo,
    QueueLocation,
    RedisNodeInfo,
    SchedulerEnqueueEventInfo,
    SchedulerEntryInfo,
    ServerInfo,
    ShardedQueueInfo,
)
from asynq_aio._task import PayloadLike, TaskInfo, TaskState, encode_payload
from asynq_aio.protocol.admin import Action
from asynq_aio.protocol.keys import queue_keys
from asynq_aio.protocol.session import RedisSession
from asynq_aio.protocol.shards import group_shards
from asynq_aio.protocol.topology import shard_for_slot

__all__ = ["Inspector"]

DEFAULT_PAGE_SIZE = 30


def _range(page: int, size: int) -> tuple[int, int]:
    if page < 1:
        raise ValueError(f"page numbers start at 1, got {page}")
    if size < 1:
        raise ValueError(f"page size must be at least 1, got {size}")
    start = (page - 1) * size
    return start, start + size - 1


class Inspector(AsyncClosing):
    """Reads and manages queues and tasks; safe to share between coroutines.

    ``Inspector(RedisClusterClientOpt(addrs=[...]))`` owns its connections (close it, or use
    ``async with``); ``Inspector(existing_redis)`` borrows a caller's client.
    """

    def __init__(self, redis: RedisConnOpt | RedisClient, *, retry: RetryPolicy | None = None) -> None:
        self._session = RedisSession.open(redis, retry=retry)
        self._broker = self._session.broker()
        self._admin = self._session.admin()

    @property
    def is_cluster(self) -> bool:
        """Whether the connection is to a Redis Cluster (the ``cluster_*`` methods need one)."""
        return self._session.is_cluster

    async def aclose(self) -> None:
        """Close the connections this inspector opened (a borrowed client is left open); idempotent."""
        await self._session.aclose()

    # -- queues -------------------------------------------------------------------------------------

    async def queues(self) -> list[str]:
        """Names of all queues (``asynq:queues``), sorted."""
        return await self._broker.all_queues()

    async def get_queue_info(self, queue: str, *, memory: bool = True) -> QueueInfo:
        """Size, per-state counts, today's and all-time processed/failed, paused, latency and
        (with ``memory``) an estimate of the memory the queue uses. Raises QueueNotFoundError."""
        queue_keys(queue)
        (info,) = await self._admin.queue_infos([queue], memory=memory)
        return info

    async def get_queue_infos(self, queues: list[str] | None = None) -> list[QueueInfo]:
        """:meth:`get_queue_info` of many queues (all by default) in a few round trips, without
        the memory estimate."""
        names = await self.queues() if queues is None else queues
        for q in names:
            queue_keys(q)
        return await self._admin.queue_infos(names)

    async def get_queue_infos_with_memory(self, queues: list[str] | None = None) -> list[QueueInfo]:
        """:meth:`get_queue_infos` with each queue's memory estimate (as :meth:`get_queue_info` makes
        it, from a fixed sample of task hashes): still a few round trips for all the queues, which is
        what a dashboard's overview needs instead of one call per queue."""
        names = await self.queues() if queues is None else queues
        for q in names:
            queue_keys(q)
        return await self._admin.queue_infos(names, memory=True)

    async def sharded_queue_info(self, queue: str, *, memory: bool = True) -> ShardedQueueInfo:
        """The sharded queue ``queue`` (its logical name) as one: the :class:`QueueInfo` of every shard
        of it in ``asynq:queues`` added up, with each shard's own info. Shards are recognised by
        name, whatever their count (after a change of count the old shards are counted until they
        are removed), so no configuration is needed. Raises QueueNotFoundError when no shard exists."""
        shards = group_shards(await self.queues()).get(queue)
        if not shards:
            raise QueueNotFoundError(f'sharded queue "{queue}" not found (no shard of it in asynq:queues)')
        return ShardedQueueInfo.of(queue, await self._admin.queue_infos(list(shards), memory=memory))

    async def history(self, queue: str, days: int = 7) -> list[DailyStats]:
        """Processed and failed counts of the last ``days`` UTC days, today first."""
        if days < 1:
            raise ValueError(f"days must be at least 1, got {days}")
        return await self._admin.history(queue, days)

    async def histories(self, queues: list[str] | None = None, days: int = 7) -> dict[str, list[DailyStats]]:
        """:meth:`history` of many queues (all by default), by queue, in one pipelined batch instead of
        a round trip per queue: what a dashboard's chart of every queue needs. Raises
        QueueNotFoundError for an unknown queue."""
        if days < 1:
            raise ValueError(f"days must be at least 1, got {days}")
        names = await self.queues() if queues is None else queues
        for q in names:
            queue_keys(q)
        return await self._admin.histories(names, days)

    async def groups(self, queue: str) -> list[GroupInfo]:
        """The queue's groups of tasks waiting for aggregation, with their sizes."""
        return await self._admin.groups(queue)

    async def delete_queue(self, queue: str, *, force: bool = False) -> int:
        """Remove the queue and every key it has; returns the number of keys deleted.

        Refuses a queue with active tasks, and a non-empty queue unless ``force``
        (FailedPreconditionError). Deletes in batches found by SCAN on the queue's node."""
        return await self._admin.delete_queue(queue, force=force)

    async def pause_queue(self, queue: str) -> bool:
        """Stop every server from taking tasks from ``queue``; False if it was already paused."""
        await self._admin.require_queue(queue)
        return await self._broker.pause(queue)

    async def unpause_queue(self, queue: str) -> bool:
        """Let servers take tasks from ``queue`` again; False if it was not paused."""
        await self._admin.require_queue(queue)
        return await self._broker.unpause(queue)

    # -- tasks --------------------------------------------------------------------------------------

    async def get_task_info(self, queue: str, task_id: str) -> TaskInfo:
        """One task with its state, result, last error and next process time.

        Raises QueueNotFoundError or TaskNotFoundError."""
        return await self._admin.task(queue, task_id)

    async def list_tasks(
        self,
        queue: str,
        state: TaskState | str,
        *,
        group: str | None = None,
        page: int = 1,
        size: int = DEFAULT_PAGE_SIZE,
    ) -> list[TaskInfo]:
        """One page of the tasks in ``state`` (aggregating needs ``group``). Pending tasks come in
        dequeue order; scheduled and retry by due time; archived and completed oldest first."""
        start, stop = _range(page, size)
        return await self._admin.list_tasks(queue, TaskState(state), start, stop, group=group)

    async def list_pending_tasks(
        self, queue: str, *, page: int = 1, size: int = DEFAULT_PAGE_SIZE
    ) -> list[TaskInfo]:
        """One page of pending tasks, the next to be dequeued first. Raises QueueNotFoundError."""
        return await self.list_tasks(queue, TaskState.PENDING, page=page, size=size)

    async def list_active_tasks(
        self, queue: str, *, page: int = 1, size: int = DEFAULT_PAGE_SIZE
    ) -> list[TaskInfo]:
        """Running tasks; ``is_orphaned`` marks one whose lease is missing or expired."""
        return await self.list_tasks(queue, TaskState.ACTIVE, page=page, size=size)

    async def list_scheduled_tasks(
        self, queue: str, *, page: int = 1, size: int = DEFAULT_PAGE_SIZE
    ) -> list[TaskInfo]:
        """One page of scheduled tasks, the soonest due first. Raises QueueNotFoundError."""
        return await self.list_tasks(queue, TaskState.SCHEDULED, page=page, size=size)

    async def list_retry_tasks(
        self, queue: str, *, page: int = 1, size: int = DEFAULT_PAGE_SIZE
    ) -> list[TaskInfo]:
        """One page of tasks waiting to be retried, the soonest due first. Raises QueueNotFoundError."""
        return await self.list_tasks(queue, TaskState.RETRY, page=page, size=size)

    async def list_archived_tasks(
        self, queue: str, *, page: int = 1, size: int = DEFAULT_PAGE_SIZE
    ) -> list[TaskInfo]:
        """One page of archived tasks, the oldest first. Raises QueueNotFoundError."""
        return await self.list_tasks(queue, TaskState.ARCHIVED, page=page, size=size)

    async def list_completed_tasks(
        self, queue: str, *, page: int = 1, size: int = DEFAULT_PAGE_SIZE
    ) -> list[TaskInfo]:
        """One page of completed tasks, the soonest to expire first. Raises QueueNotFoundError."""
        return await self.list_tasks(queue, TaskState.COMPLETED, page=page, size=size)

    async def list_aggregating_tasks(
        self, queue: str, group: str, *, page: int = 1, size: int = DEFAULT_PAGE_SIZE
    ) -> list[TaskInfo]:
        """One page of ``group``'s tasks waiting for aggregation, oldest first. Raises QueueNotFoundError."""
        return await self.list_tasks(queue, TaskState.AGGREGATING, group=group, page=page, size=size)

    async def find_task(self, task_id: str) -> TaskInfo:
        """A task by its ID alone, in whichever queue holds it (every queue is asked: Asynq keeps no
        ID-to-queue index). Raises TaskNotFoundError, or FailedPreconditionError when the ID is in
        more than one queue (then name the queue: :meth:`get_task_info`)."""
        holders = await self._admin.queues_holding(task_id)
        if not holders:
            raise TaskNotFoundError(f'task "{task_id}" not found in any queue')
        if len(holders) > 1:
            raise FailedPreconditionError(
                f'task ID "{task_id}" is in {len(holders)} queues ({", ".join(holders)}): name the queue'
            )
        return await self._admin.task(holders[0], task_id)

    async def cancel(self, task_id: str, *, queue: str | None = None) -> CancelOutcome:
        """Stop a task by its ID: a running one gets the cancel signal (its handler is cancelled;
        like Go's, the task then goes to retry, see ``Config.count_cancel_as_failure``); one that
        waits (pending, scheduled, retry, aggregating) is deleted, so it never runs. A finished
        task (completed, archived) raises FailedPreconditionError; an unknown one TaskNotFoundError.
        ``queue`` narrows the lookup to one queue (needed when the ID is in several)."""
        for _ in range(3):  # a task can start between the lookup and the delete: look again
            if queue is None:
                info = await self.find_task(task_id)
            else:
                info = await self._admin.task(queue, task_id)
            if info.state is TaskState.ACTIVE:
                await self._broker.publish_cancel(task_id)
                return CancelOutcome(info.queue, info.state, "signalled")
            if info.state in (TaskState.COMPLETED, TaskState.ARCHIVED):
                raise FailedPreconditionError(f'task "{task_id}" already finished ({info.state.value})')
            try:
                await self._admin.apply_one(info.queue, task_id, "delete")
            except FailedPreconditionError:
                continue  # it became active meanwhile
            except TaskNotFoundError:
                raise TaskNotFoundError(f'task "{task_id}" finished or was removed meanwhile') from None
            return CancelOutcome(info.queue, info.state, "deleted")
        raise FailedPreconditionError(f'task "{task_id}" kept changing state: try again')

    async def delete_task(self, queue: str, task_id: str) -> None:
        """Delete a task in any state but active (and release its unique lock)."""
        await self._admin.apply_one(queue, task_id, "delete")

    async def run_task(self, queue: str, task_id: str) -> None:
        """Move a scheduled, retry, archived or aggregating task to pending."""
        await self._admin.apply_one(queue, task_id, "run")

    async def archive_task(self, queue: str, task_id: str) -> None:
        """Archive a pending, scheduled, retry or aggregating task."""
        await self._admin.apply_one(queue, task_id, "archive")

    async def delete_all_tasks(self, queue: str, state: TaskState | str, *, group: str | None = None) -> int:
        """Delete every task in ``state`` (not active), in batches; returns how many."""
        return await self._bulk(queue, state, "delete", group)

    async def run_all_tasks(self, queue: str, state: TaskState | str, *, group: str | None = None) -> int:
        """Move every scheduled, retry, archived or aggregating task to pending; returns how many."""
        return await self._bulk(queue, state, "run", group)

    async def archive_all_tasks(self, queue: str, state: TaskState | str, *, group: str | None = None) -> int:
        """Archive every pending, scheduled, retry or aggregating task; returns how many."""
        return await self._bulk(queue, state, "archive", group)

    async def _bulk(self, queue: str, state: TaskState | str, action: Action, group: str | None) -> int:
        return await self._admin.apply_all(queue, TaskState(state), action, group=group)

    async def update_task_payload(self, queue: str, task_id: str, payload: PayloadLike) -> TaskInfo:
        """Replace the payload of a scheduled task (its unique lock, if any, keeps its name)."""
        return await self._admin.update_payload(queue, task_id, encode_payload(payload))

    async def cancel_processing(self, task_id: str) -> None:
        """Ask every server to cancel the running task ``task_id`` (PUBLISH asynq:cancel)."""
        await self._broker.publish_cancel(task_id)

    # -- servers, schedulers, Redis -----------------------------------------------------------------

    async def servers(self) -> list[ServerInfo]:
        """Live servers (expired heartbeats dropped) with the tasks their workers run now."""
        return await self._admin.servers()

    async def scheduler_entries(self) -> list[SchedulerEntryInfo]:
        """Periodic task entries of every live scheduler, by spec."""
        return await self._admin.scheduler_entries()

    async def list_scheduler_enqueue_events(
        self, entry_id: str, *, page: int = 1, size: int = DEFAULT_PAGE_SIZE
    ) -> list[SchedulerEnqueueEventInfo]:
        """When a scheduler entry enqueued which task, newest first."""
        start, stop = _range(page, size)
        return await self._admin.scheduler_events(entry_id, start, stop)

    async def redis_info(self) -> tuple[list[RedisNodeInfo], dict[str, str]]:
        """INFO summary of the server or of each cluster node, and CLUSTER INFO (empty if single)."""
        return await self._admin.redis_info()

    # -- cluster ------------------------------------------------------------------------------------

    @staticmethod
    def queue_slot(queue: str) -> int:
        """The cluster key slot of every key of ``queue`` (CRC16 of the hash tag mod 16384)."""
        return queue_keys(queue).slot

    async def cluster_key_slot(self, queue: str) -> int:
        """The key slot of a queue that exists (Go's ``ClusterKeySlot``)."""
        await self._admin.require_queue(queue)
        return self.queue_slot(queue)

    async def cluster_nodes(self, queue: str) -> list[ClusterNodeRef]:
        """The nodes serving the queue's slot, master first (Go's ``ClusterNodes``)."""
        if not self.is_cluster:
            raise FailedPreconditionError("cluster nodes need a Redis Cluster connection")
        await self._admin.require_queue(queue)
        (loc,) = await self.cluster_locations([queue])
        return loc.nodes

    async def cluster_locations(self, queues: list[str]) -> list[QueueLocation]:
        """Slot and owning nodes (master first, then replicas) of each queue, from CLUSTER SHARDS."""
        shards = await self._admin.cluster_shards()
        out = []
        for q in queues:
            slot = self.queue_slot(q)
            shard = shard_for_slot(shards, slot)
            owners = [
                ClusterNodeRef(node_id=n.node_id, addr=n.addr, role=n.role, health=n.health)
                for n in (shard.nodes if shard is not None else ())
            ]
            out.append(QueueLocation(q, slot, owners))
        return out
