"""Enqueue options: parsing what a caller passes (seconds, timedelta, datetime) into wire values."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from asynq_aio.errors import InvalidTaskError
from asynq_aio.protocol.keys import validate_queue_name

Duration = int | float | timedelta
DEFAULT_QUEUE = "default"
DEFAULT_MAX_RETRY = 25
DEFAULT_TIMEOUT_S = 30 * 60


def seconds(value: Duration | None, name: str) -> float:
    if value is None:
        return 0.0
    s = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if s < 0:
        raise InvalidTaskError(f"{name} must not be negative, got {value!r}")
    return s


def unix(value: datetime, name: str) -> float:
    if not isinstance(value, datetime):
        raise InvalidTaskError(f"{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None:
        raise InvalidTaskError(f"{name} must be timezone-aware (e.g. datetime.now(UTC)), got {value!r}")
    return value.timestamp()


@dataclass(frozen=True, slots=True)
class ResolvedOptions:
    """Enqueue options reduced to what the wire format stores."""

    queue: str
    task_id: str
    max_retry: int
    timeout_s: int
    deadline_unix: int
    process_at: float | None
    unique_ttl_s: int
    retention_s: int
    group: str


def resolve(
    *,
    now: float,
    queue: str | None,
    max_retry: int | None,
    timeout: Duration | None,
    deadline: datetime | None,
    process_at: datetime | None,
    process_in: Duration | None,
    unique: Duration | None,
    task_id: str | None,
    retention: Duration | None,
    group: str | None,
) -> ResolvedOptions:
    q = validate_queue_name(queue if queue is not None else DEFAULT_QUEUE)
    if max_retry is not None and max_retry < 0:
        raise InvalidTaskError(f"max_retry must not be negative, got {max_retry}")
    if task_id is not None and not task_id.strip():
        raise InvalidTaskError("task_id must not be empty")
    if process_at is not None and process_in is not None:
        raise InvalidTaskError("give process_at or process_in, not both")
    # Asynq stores timeout and retention as whole seconds: a fraction rounds up, never down to 0
    # (a 0.3 s timeout became 0, which means "the 30-minute default"; a 0.5 s retention meant none).
    t = math.ceil(seconds(timeout, "timeout"))
    d = int(unix(deadline, "deadline")) if deadline is not None else 0
    if t == 0 and d == 0:
        t = DEFAULT_TIMEOUT_S
    at: float | None = None
    if process_at is not None:
        at = unix(process_at, "process_at")
    elif process_in is not None:
        at = now + seconds(process_in, "process_in")
    unique_s = seconds(unique, "unique")
    if unique is not None and unique_s < 1:
        raise InvalidTaskError("unique TTL must be at least one second")
    unique_ttl = int(unique_s)
    if unique_ttl and at is not None and at > now:
        unique_ttl += int(at - now)
    if group is not None and not group.strip():
        raise InvalidTaskError("group must not be empty")
    return ResolvedOptions(
        queue=q,
        task_id=task_id or str(uuid.uuid4()),
        max_retry=DEFAULT_MAX_RETRY if max_retry is None else max_retry,
        timeout_s=t,
        deadline_unix=d,
        process_at=at if at is not None and at > now else None,
        unique_ttl_s=unique_ttl,
        retention_s=math.ceil(seconds(retention, "retention")),
        group=group or "",
    )
