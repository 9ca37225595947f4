"""What the Inspector returns: the public result types, in one module of their own.

Plain frozen dataclasses, built by the storage layer (protocol/admin.py) from Redis replies and
handed out by :class:`asynq_aio.Inspector` (and, for ``CancelOutcome``, ``Client.cancel``). They
mirror Go Asynq's inspector types where Go has one (``QueueInfo``, ``DailyStats``, ...). ``ServerInfo``
here is the live server as listed, not the protobuf ``ServerInfo`` a heartbeat writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Literal

from asynq_aio._task import TaskState
from asynq_aio.protocol.codec import WorkerRecord

__all__ = [
    "CancelOutcome",
    "ClusterNodeRef",
    "DailyStats",
    "GroupInfo",
    "QueueInfo",
    "QueueLocation",
    "RedisNodeInfo",
    "SchedulerEnqueueEventInfo",
    "SchedulerEntryInfo",
    "ServerInfo",
    "ShardedQueueInfo",
]


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """A snapshot of one queue, as ``asynq queue inspect`` shows it (Go's ``QueueInfo``)."""

    queue: str
    size: int  # tasks in every state
    groups: int
    latency: timedelta  # age of the oldest pending task
    memory_usage: int | None  # bytes, estimated from a sample of task hashes (None: not measured)
    pending: int
    active: int
    scheduled: int
    retry: int
    archived: int
    completed: int
    aggregating: int
    processed: int  # today (UTC)
    failed: int  # today (UTC)
    processed_total: int
    failed_total: int
    paused: bool
    timestamp: datetime

    def count(self, state: TaskState) -> int:
        """The number of tasks in ``state`` (the field named after it)."""
        return int(getattr(self, state.value))


#: The QueueInfo fields a sharded queue's aggregate adds up over its shards.
_SUMMED = (
    "size",
    "groups",
    "pending",
    "active",
    "scheduled",
    "retry",
    "archived",
    "completed",
    "aggregating",
    "processed",
    "failed",
    "processed_total",
    "failed_total",
)


@dataclass(frozen=True, slots=True)
class ShardedQueueInfo(QueueInfo):
    """A sharded queue seen as one: its shards' :class:`QueueInfo` added up, under the logical name.

    Counts and sizes are sums; ``latency`` is the oldest pending task's over all shards; ``memory_usage``
    a sum (None when a shard's was not measured); ``paused`` only when every shard is paused (a
    partly paused queue still runs tasks); ``shards`` holds each shard's own info, in shard order."""

    shards: tuple[QueueInfo, ...] = ()

    @classmethod
    def of(cls, queue: str, shards: Sequence[QueueInfo]) -> ShardedQueueInfo:
        """The aggregate of ``shards`` (at least one) under the logical name ``queue``."""
        if not shards:
            raise ValueError(f"sharded queue {queue!r}: no shard to add up")
        memory = [s.memory_usage for s in shards]
        return cls(
            queue=queue,
            latency=max(s.latency for s in shards),
            memory_usage=None if None in memory else sum(m for m in memory if m is not None),
            paused=all(s.paused for s in shards),
            timestamp=max(s.timestamp for s in shards),
            shards=tuple(shards),
            **{f: sum(getattr(s, f) for s in shards) for f in _SUMMED},
        )


@dataclass(frozen=True, slots=True)
class DailyStats:
    """One queue's processed and failed counts for one UTC day (Go's ``DailyStats``)."""

    queue: str
    date: date  # UTC day
    processed: int
    failed: int


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """A group of tasks waiting for aggregation and how many tasks it holds (Go's ``GroupInfo``)."""

    group: str
    size: int


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """A live server (from its heartbeat) with the tasks its workers are running now."""

    id: str
    host: str
    pid: int
    concurrency: int
    queues: dict[str, int]
    strict_priority: bool
    status: str
    started: datetime
    active_workers: list[WorkerRecord] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class SchedulerEntryInfo:
    """A periodic task entry as a live scheduler last published it (what ``asynq cron ls`` lists): ``options``
    are Go's option strings (``Queue("x")``); a time is None where the scheduler wrote Go's zero time."""

    id: str
    spec: str
    task_type: str
    task_payload: bytes
    options: list[str]
    next_enqueue_at: datetime | None
    prev_enqueue_at: datetime | None  # None: not enqueued yet


@dataclass(frozen=True, slots=True)
class SchedulerEnqueueEventInfo:
    """One task a scheduler enqueued for an entry, and when (what ``asynq cron history`` lists)."""

    task_id: str
    enqueued_at: datetime


@dataclass(frozen=True, slots=True)
class RedisNodeInfo:
    """One Redis server's INFO summary (the single server, or each cluster node)."""

    addr: str
    node_id: str
    role: str
    version: str
    uptime_days: int
    connections: int
    memory_used: int  # bytes
    memory_peak: int  # bytes


@dataclass(frozen=True, slots=True)
class CancelOutcome:
    """What :meth:`Inspector.cancel` did: the task's queue, the state it was found in, and
    ``"signalled"`` (a running task's handler was asked to stop) or ``"deleted"`` (it waited)."""

    queue: str
    state: TaskState
    action: Literal["signalled", "deleted"]


@dataclass(frozen=True, slots=True)
class ClusterNodeRef:
    """A Redis Cluster node serving a queue's slot, as CLUSTER SHARDS reports it: ``role`` is ``master`` or
    ``replica``, ``health`` ``online``, ``loading`` or ``fail``."""

    node_id: str
    addr: str  # host:port
    role: str  # master | replica
    health: str


@dataclass(frozen=True, slots=True)
class QueueLocation:
    """Where a queue lives in a Redis Cluster: its key slot and the nodes serving it, master first (an
    empty list when no shard covers the slot)."""

    queue: str
    slot: int
    nodes: list[ClusterNodeRef]  # master first
