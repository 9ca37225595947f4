"""Protobuf encoding of the records Asynq stores, and their conversion to asynq-aio's types.

The generated ``asynq_pb2`` messages are used directly as the internal task message: they are the
wire contract, and upb's parser is faster than copying into a Python object.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp

from asynq_aio._errors import MalformedTaskError
from asynq_aio._task import TaskInfo, TaskState
from asynq_aio.protocol.asynq_pb2 import (
    SchedulerEnqueueEvent,
    SchedulerEntry,
    ServerInfo,
    TaskMessage,
    WorkerInfo,
)

__all__ = [
    "SchedulerEnqueueEvent",
    "SchedulerEntry",
    "ServerInfo",
    "ServerRecord",
    "TaskMessage",
    "WorkerInfo",
    "WorkerRecord",
    "decode_fetched_message",
    "decode_server_info",
    "decode_task_message",
    "decode_worker_info",
    "encode_server_info",
    "encode_worker_info",
    "from_unix",
    "new_task_message",
    "task_info",
]


def decode_task_message(data: bytes) -> TaskMessage:
    """Parse a stored ``msg`` field; a record a buggy producer wrote raises MalformedTaskError."""
    msg = TaskMessage()
    try:
        msg.ParseFromString(data)
    except (DecodeError, RuntimeWarning, ValueError) as exc:
        raise MalformedTaskError(f"task message is not a valid asynq TaskMessage: {exc}") from exc
    return msg


def decode_fetched_message(data: bytes, *, queue: str, task_id: str) -> TaskMessage:
    """Parse the ``msg`` of a task just taken from ``queue``'s pending list under ``task_id``.

    Every later write for this attempt (ack, retry, archive, lease) builds its keys from the
    message's own queue and ID, so a message that names another queue or ID (a buggy producer
    copied a record, or wrote an empty one) is malformed: running it would ack or fail some other
    task's keys and leave this one stuck in ``active``.
    """
    msg = decode_task_message(data)
    if msg.queue != queue or msg.id != task_id:
        raise MalformedTaskError(
            f"task message names queue {msg.queue!r} and ID {msg.id!r}, "
            f"but it is stored as {task_id!r} in queue {queue!r}"
        )
    return msg


#: Headers that carry a timeout or deadline to the millisecond. Asynq stores both as whole seconds,
#: so the message holds them rounded up (never 0, which means "none" to Go) and an asynq-aio worker
#: reads the exact value here; Go passes the headers through and uses the whole seconds.
TIMEOUT_MS_HEADER = "asynq-aio-timeout-ms"
DEADLINE_MS_HEADER = "asynq-aio-deadline-ms"


def exact_timeout(msg: TaskMessage) -> float:
    """The task's timeout in seconds (0 = none), to the millisecond when the producer gave one."""
    ms = _header_ms(msg, TIMEOUT_MS_HEADER)
    return ms / 1000 if ms is not None and msg.timeout > 0 else float(msg.timeout)


def exact_deadline(msg: TaskMessage) -> float:
    """The task's deadline in unix seconds (0 = none), to the millisecond when the producer gave one."""
    ms = _header_ms(msg, DEADLINE_MS_HEADER)
    return ms / 1000 if ms is not None and msg.deadline > 0 else float(msg.deadline)


def _header_ms(msg: TaskMessage, name: str) -> int | None:
    raw = msg.headers.get(name)
    if raw is None or not raw.isdigit():  # absent, or not ours to trust: the whole seconds rule
        return None
    return int(raw)


def new_task_message(
    *,
    task_id: str,
    task_type: str,
    payload: bytes,
    queue: str,
    max_retry: int,
    timeout_s: int,
    deadline_unix: int,
    unique_key: str = "",
    retention_s: int = 0,
    group: str = "",
    headers: Mapping[str, str] | None = None,
) -> TaskMessage:
    """A TaskMessage from keyword fields named for their units: ``timeout_s`` seconds and ``deadline_unix``
    unix seconds (0 = none), ``retention_s`` seconds to keep it completed."""
    msg = TaskMessage(
        type=task_type,
        payload=payload,
        id=task_id,
        queue=queue,
        retry=max_retry,
        timeout=timeout_s,
        deadline=deadline_unix,
        unique_key=unique_key,
        retention=retention_s,
        group_key=group,
    )
    if headers:
        msg.headers.update(headers)
    return msg


def from_unix(seconds: int | float) -> datetime | None:
    """A unix time as an aware UTC datetime; 0 (proto3's "unset") is None."""
    if not seconds:
        return None
    return datetime.fromtimestamp(seconds, tz=UTC)


_FIELDS = frozenset(TaskInfo.model_fields)
_set = object.__setattr__


def _trusted_info(values: dict[str, Any]) -> TaskInfo:
    """A TaskInfo from values this module built itself, without pydantic's per-field loop.

    ``model_construct`` walks every field's aliases and defaults: ~18 us of the ~38 us an enqueue
    spent in Python before its write. The values here cover every field, so setting the instance
    state that ``model_construct`` would set is enough; tests compare the two field by field.
    """
    info = TaskInfo.__new__(TaskInfo)
    _set(info, "__dict__", values)
    _set(info, "__pydantic_fields_set__", set(_FIELDS))
    _set(info, "__pydantic_extra__", None)
    _set(info, "__pydantic_private__", None)
    return info


def task_info(
    msg: TaskMessage,
    state: TaskState,
    *,
    next_process_at: datetime | None = None,
    result: bytes | None = None,
    is_orphaned: bool = False,
) -> TaskInfo:
    """The TaskInfo of a stored message in ``state``; proto3's unset (0) times and durations become None."""
    timeout, retention = msg.timeout, msg.retention
    return _trusted_info(
        {
            "id": msg.id,
            "queue": msg.queue,
            "type": msg.type,
            "payload": msg.payload,
            # an empty map skips the copy: dict() on protobuf's map goes through the Mapping ABC
            "headers": dict(msg.headers) if msg.headers else {},
            "state": state,
            "max_retry": msg.retry,
            "retried": msg.retried,
            "last_err": msg.error_msg,
            "last_failed_at": from_unix(msg.last_failed_at),
            "timeout": timedelta(seconds=timeout) if timeout else None,
            "deadline": from_unix(msg.deadline),
            "group": msg.group_key,
            "next_process_at": next_process_at,
            "is_orphaned": is_orphaned,
            "retention": timedelta(seconds=retention) if retention else None,
            "completed_at": from_unix(msg.completed_at),
            "result": result,
            "unique_key": msg.unique_key,
        }
    )


# Go's zero time.Time as a Timestamp: what Go writes for "never" (a scheduler entry's previous
# enqueue before its first run; ``asynq cron ls`` shows it as "N/A"). An unset Timestamp would
# read as 1970.
GO_ZERO_SECONDS = -62135596800


def to_timestamp(when: datetime | None) -> Timestamp:
    """A protobuf Timestamp as Go writes it; None becomes Go's zero time."""
    if when is None:
        return Timestamp(seconds=GO_ZERO_SECONDS)
    ts = Timestamp()
    ts.FromDatetime(when.astimezone(UTC))
    return ts


def from_timestamp(ts: Timestamp) -> datetime | None:
    """The time a Timestamp holds; None when it is unset or Go's zero time."""
    if ts.seconds <= GO_ZERO_SECONDS or (ts.seconds == 0 and ts.nanos == 0):
        return None
    return ts.ToDatetime(tzinfo=UTC)


def _datetime(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class ServerRecord:
    """One server's heartbeat record (``asynq:servers:{host:pid:id}``)."""

    host: str
    pid: int
    server_id: str
    concurrency: int
    queues: dict[str, int]
    strict_priority: bool
    status: str
    started: datetime
    active_worker_count: int


@dataclass(frozen=True, slots=True)
class WorkerRecord:
    """One running task as a worker heartbeat reports it (a field of ``asynq:workers:{...}``)."""

    host: str
    pid: int
    server_id: str
    task_id: str
    task_type: str
    task_payload: bytes
    queue: str
    started: datetime
    deadline: datetime
    extra: dict[str, str] = field(default_factory=dict)


def encode_server_info(rec: ServerRecord) -> bytes:
    """A server's heartbeat record as the protobuf ``ServerInfo`` bytes Go's ``asynq server ls`` reads."""
    msg = ServerInfo(
        host=rec.host,
        pid=rec.pid,
        server_id=rec.server_id,
        concurrency=rec.concurrency,
        strict_priority=rec.strict_priority,
        status=rec.status,
        start_time=to_timestamp(rec.started),
        active_worker_count=rec.active_worker_count,
    )
    msg.queues.update(rec.queues)
    return msg.SerializeToString()


def decode_server_info(data: bytes) -> ServerRecord:
    """The inverse of :func:`encode_server_info`; raises MalformedTaskError for bytes that do not parse."""
    msg = ServerInfo()
    try:
        msg.ParseFromString(data)
    except DecodeError as exc:
        raise MalformedTaskError(f"server info is not a valid asynq ServerInfo: {exc}") from exc
    return ServerRecord(
        host=msg.host,
        pid=msg.pid,
        server_id=msg.server_id,
        concurrency=msg.concurrency,
        queues=dict(msg.queues),
        strict_priority=msg.strict_priority,
        status=msg.status,
        started=_datetime(msg.start_time),
        active_worker_count=msg.active_worker_count,
    )


def encode_worker_info(rec: WorkerRecord) -> bytes:
    """A running task as the protobuf ``WorkerInfo`` bytes Go reads; ``extra`` is not written (Go has no
    such field)."""
    return WorkerInfo(
        host=rec.host,
        pid=rec.pid,
        server_id=rec.server_id,
        task_id=rec.task_id,
        task_type=rec.task_type,
        task_payload=rec.task_payload,
        queue=rec.queue,
        start_time=to_timestamp(rec.started),
        deadline=to_timestamp(rec.deadline),
    ).SerializeToString()


def decode_worker_info(data: bytes) -> WorkerRecord:
    """The inverse of :func:`encode_worker_info`; raises MalformedTaskError for bytes that do not parse."""
    msg = WorkerInfo()
    try:
        msg.ParseFromString(data)
    except DecodeError as exc:
        raise MalformedTaskError(f"worker info is not a valid asynq WorkerInfo: {exc}") from exc
    return WorkerRecord(
        host=msg.host,
        pid=msg.pid,
        server_id=msg.server_id,
        task_id=msg.task_id,
        task_type=msg.task_type,
        task_payload=msg.task_payload,
        queue=msg.queue,
        started=_datetime(msg.start_time),
        deadline=_datetime(msg.deadline),
    )
