"""Every Redis key name of the Asynq v0.26 layout is built here and nowhere else.

Per-queue keys share the ``{queue}`` hash tag so that a queue's keys live in one cluster slot and
multi-key scripts run on one node; the global keys (``asynq:queues``, ``asynq:servers`` ...) each hash
on their own.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from functools import lru_cache

from redis.crc import key_slot

from asynq_aio._errors import InvalidQueueName

PREFIX = "asynq:"

ALL_QUEUES = "asynq:queues"
ALL_SERVERS = "asynq:servers"
ALL_WORKERS = "asynq:workers"
ALL_SCHEDULERS = "asynq:schedulers"
CANCEL_CHANNEL = "asynq:cancel"
#: asynq-aio only: where the scripts announce a watched task's completion or archiving (the message
#: is the task's hash key); see scripts/watch_task.lua.
DONE_CHANNEL = "asynq-aio:done"

_FORBIDDEN = frozenset("{}")


def validate_queue_name(queue: str) -> str:
    """Reject names that would break the hash tag (and so the one-slot-per-queue guarantee)."""
    if not isinstance(queue, str) or not queue or not queue.strip():
        raise InvalidQueueName(f"invalid queue name {queue!r}: a queue name must be a non-empty string")
    bad = _FORBIDDEN.intersection(queue)
    if bad:
        raise InvalidQueueName(
            f"invalid queue name {queue!r}: it must not contain {' or '.join(sorted(bad))} "
            "(the braces form the Redis Cluster hash tag)"
        )
    return queue


class QueueKeys:
    """Key names of one queue, computed once: queue keys are on every hot path."""

    __slots__ = (
        "active",
        "aggregation_sets",
        "archived",
        "completed",
        "failed",
        "groups",
        "lease",
        "name",
        "paused",
        "pending",
        "prefix",
        "processed",
        "retry",
        "scheduled",
        "task_prefix",
    )

    def __init__(self, queue: str) -> None:
        validate_queue_name(queue)
        self.name = queue
        self.prefix = f"asynq:{{{queue}}}:"
        p = self.prefix
        self.pending = p + "pending"
        self.active = p + "active"
        self.lease = p + "lease"
        self.scheduled = p + "scheduled"
        self.retry = p + "retry"
        self.archived = p + "archived"
        self.completed = p + "completed"
        self.paused = p + "paused"
        self.processed = p + "processed"
        self.failed = p + "failed"
        self.groups = p + "groups"
        self.aggregation_sets = p + "aggregation_sets"
        self.task_prefix = p + "t:"

    def task(self, task_id: str) -> str:
        """``Q t:<task id>``: the task's hash (its message, state and result)."""
        return self.task_prefix + task_id

    def task_id_of(self, key: str) -> str:
        """Inverse of :meth:`task` (used when scanning keys)."""
        if not key.startswith(self.task_prefix):
            raise ValueError(f"{key!r} is not a task key of queue {self.name!r}")
        return key[len(self.task_prefix) :]

    def processed_on(self, day: datetime) -> str:
        """``Q processed:<YYYY-MM-DD>``: the queue's processed counter for the UTC day of ``day`` (a naive
        ``day`` is taken as UTC)."""
        return f"{self.processed}:{_utc_date(day)}"

    def failed_on(self, day: datetime) -> str:
        """``Q failed:<YYYY-MM-DD>``: the queue's failed counter for the UTC day of ``day`` (a naive
        ``day`` is taken as UTC)."""
        return f"{self.failed}:{_utc_date(day)}"

    def unique(self, task_type: str, payload: bytes) -> str:
        """Unique lock name, as Go's ``base.UniqueKey``: ``Q unique:<type>:<md5 hex of payload>``.

        Go gives a nil payload ``Q unique:<type>:`` (trailing colon, no digest) and a non-nil empty
        one the md5 of nothing. Python has no nil bytes; ``NewTask(type, nil)`` is what Go producers
        write for "no payload", so an empty payload here takes the nil form and meets Go's lock."""
        if not payload:
            return f"{self.prefix}unique:{task_type}:"
        return f"{self.prefix}unique:{task_type}:{hashlib.md5(payload).hexdigest()}"

    def group(self, group: str) -> str:
        """``Q g:<group>``: the zset of a group's waiting task IDs, scored by when each was added."""
        return f"{self.prefix}g:{group}"

    def enqueue_fence(self, producer: str, epoch: int) -> str:
        """``Q aio:fence:<producer>:<epoch>``: a bitmap of the sequence numbers one producer's
        enqueues stored in this queue (asynq-aio only; Go never reads it, and it expires)."""
        return f"{self.prefix}aio:fence:{producer}:{epoch}"

    def limit_state(self, rule_id: str) -> str:
        """``Q aio:limit:<rule id>:``: the prefix of a flow-control limit's state keys in this queue, one
        per payload key value (appended by dequeue_limited.lua; asynq-aio only, Go never reads them)."""
        return f"{self.prefix}aio:limit:{rule_id}:"

    def dequeue_record(self, token: str) -> str:
        """``Q aio:took:<attempt token>``: the IDs one limited dequeue call took, so that a re-sent call
        hands the same tasks back (asynq-aio only; expires after ten minutes)."""
        return f"{self.prefix}aio:took:{token}"

    def aggregation_set(self, group: str, set_id: str) -> str:
        """``Q g:<group>:<set id>``: the members one aggregation took out of ``group``."""
        return f"{self.prefix}g:{group}:{set_id}"

    def hash_tag(self) -> str:
        """The string Redis Cluster hashes for every key of this queue."""
        return self.name

    @property
    def slot(self) -> int:
        """The cluster key slot of every key of this queue (CRC16 of the hash tag mod 16384)."""
        return int(key_slot(self.pending.encode()))


@lru_cache(maxsize=4096)
def queue_keys(queue: str) -> QueueKeys:
    """Cached :class:`QueueKeys` (queue names are few and reused on every call)."""
    return QueueKeys(queue)


def _utc_date(day: datetime) -> str:
    if day.tzinfo is not None:
        day = day.astimezone(UTC)
    return day.strftime("%Y-%m-%d")


def server_info_key(host: str, pid: int, server_id: str) -> str:
    """``asynq:servers:{<host>:<pid>:<server id>}``: a server's heartbeat record (protobuf ``ServerInfo``)."""
    return f"asynq:servers:{{{host}:{pid}:{server_id}}}"


def workers_key(host: str, pid: int, server_id: str) -> str:
    """``asynq:workers:{<host>:<pid>:<server id>}``: a hash of a server's running tasks, task ID to
    protobuf ``WorkerInfo``."""
    return f"asynq:workers:{{{host}:{pid}:{server_id}}}"


def scheduler_entries_key(scheduler_id: str) -> str:
    """``asynq:schedulers:{<scheduler id>}``: a scheduler's entries, a list of protobuf ``SchedulerEntry``."""
    return f"asynq:schedulers:{{{scheduler_id}}}"


def scheduler_history_key(entry_id: str) -> str:
    """``asynq:scheduler_history:<entry id>``: a zset of an entry's enqueue events, scored by their time."""
    return f"asynq:scheduler_history:{entry_id}"


def fire_claim_key(queue: str, entry_id: str, fire_unix: int) -> str:
    """``asynq:{<queue>}:cron:<entry id>:<fire unix>``: one fire's claim, in the target queue's slot so
    that marking the fire done and storing its task happen in one script (asynq-aio only; Go has none)."""
    return f"{queue_keys(queue).prefix}cron:{entry_id}:{fire_unix}"


def queue_from_key(key: str) -> str | None:
    """The queue name inside a per-queue key, or None for a global key."""
    if not key.startswith("asynq:{"):
        return None
    end = key.find("}", 7)
    return key[7:end] if end > 0 else None
