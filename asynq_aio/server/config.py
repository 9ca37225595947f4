"""Server configuration, validated where it enters (a typo in a weight fails at start, not at 3 a.m.)."""

from __future__ import annotations

import os
import random
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from asynq_aio._client import DEFAULT_MAX_PAYLOAD
from asynq_aio._task import Task
from asynq_aio.protocol.keys import validate_queue_name
from asynq_aio.protocol.shards import shard_names
from asynq_aio.server.limits import FlowLimit
from asynq_aio.server.served import is_pattern, validate_pattern

RetryDelayFunc = Callable[[int, BaseException, Task], float]
IsFailureFunc = Callable[[BaseException], bool]
ErrorHandler = Callable[[Task, BaseException], Awaitable[None] | None]
HealthCheckFunc = Callable[[Exception | None], Awaitable[None] | None]
GroupAggregator = Callable[[str, list[Task]], Task | Awaitable[Task]]


def default_retry_delay(retried: int, error: BaseException, task: Task) -> float:
    """Sidekiq's backoff, as Asynq uses it: n^4 + 15 + random(0..29)*(n+1) seconds."""
    return float(retried**4 + 15 + random.randint(0, 29) * (retried + 1))


class Config(BaseModel):
    """How a server fetches and runs tasks. Durations are seconds."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    concurrency: int = Field(default_factory=lambda: max(os.cpu_count() or 1, 1), ge=1)
    queues: dict[str, int] = Field(
        default_factory=lambda: {"default": 1},
        description="queue name or glob pattern (*, ?, [...]) to weight; a pattern's queues share its weight",
    )
    shards: dict[str, int] = Field(
        default_factory=dict,
        description="literal key of queues to its shard count (2..256): that entry is served as the "
        "sharded queue's shard queues, which share its weight in turn; the plain name is not served",
    )
    strict_priority: bool = False
    queue_discovery_interval: float = Field(
        default=2.0,
        gt=0,
        description="seconds between reads of asynq:queues for the queues the patterns match (a new "
        "queue is served within about this long); unused without patterns",
    )
    shutdown_timeout: float = Field(default=8.0, ge=0)
    lease_duration: float = Field(default=30.0, gt=0, description="how long a fetched task is held")
    heartbeat_interval: float = Field(default=5.0, gt=0, description="lease extension and server info")
    recovery_interval: float = Field(default=5.0, gt=0, description="scan for expired leases")
    recovery_skew: float = Field(
        default=30.0,
        ge=0,
        description="recover only leases that expired this long ago (Go's margin against clock skew)",
    )
    forward_interval: float = Field(default=1.0, gt=0, description="longest sleep of the forwarder")
    result_retention: float = Field(
        default=600.0,
        ge=0,
        description="how long a task whose handler returned a result is kept as completed when it "
        "was enqueued without a retention (s; 0 = not kept): long enough for a caller to "
        "wait_result, short enough to bound Redis memory",
    )
    janitor_interval: float = Field(default=8.0, gt=0)
    gc_freeze: bool = Field(
        default=False,
        description="a few seconds after start, freeze the objects that exist in the garbage collector's "
        "permanent generation so its full passes stop holding the loop (process-wide: the "
        "asynq-aio worker command turns it on; see server/gc_freeze.py)",
    )
    sweep_interval: float = Field(
        default=60.0,
        ge=0,
        description="seconds between sweeps for tasks whose hash state disagrees with their list; 0 = never",
    )
    sweep_batch: int = Field(
        default=100, ge=1, description="IDs the sweeper samples per state list per round"
    )
    dequeue_batch: int = Field(default=32, ge=1, description="most tasks taken in one dequeue call")
    idle_wait: float = Field(default=1.0, gt=0, description="longest blocking wait on empty queues")
    max_payload_bytes: int = Field(
        default=DEFAULT_MAX_PAYLOAD,
        ge=1,
        description="a fetched task with a bigger payload is archived unrun (a foreign producer wrote it)",
    )
    retry_delay_func: RetryDelayFunc = default_retry_delay
    is_failure: IsFailureFunc | None = None
    error_handler: ErrorHandler | None = None
    count_cancel_as_failure: bool = False
    health_check_func: HealthCheckFunc | None = None
    health_check_interval: float = Field(default=15.0, gt=0)
    host: str | None = None
    group_aggregator: GroupAggregator | None = Field(
        default=None, description="merges a group's tasks into one: (group, tasks) -> Task, sync or async"
    )
    group_grace_period: float = Field(
        default=60.0, gt=0, description="aggregate a group when no task was added to it for this long"
    )
    group_max_delay: float = Field(
        default=0.0, ge=0, description="aggregate a group when its oldest task waited this long; 0 = none"
    )
    group_max_size: int = Field(
        default=0, ge=0, description="aggregate a group when it has this many tasks; 0 = none"
    )
    limits: list[FlowLimit] = Field(
        default_factory=list,
        description="fleet-wide rate limits and concurrency caps (RateLimit, ConcurrencyLimit), checked "
        "before a task is taken; every worker of a queue must be given the same limits",
    )

    @field_validator("queues")
    @classmethod
    def _check_queues(cls, v: dict[str, int]) -> dict[str, int]:
        if not v:
            raise ValueError("queues must name at least one queue")
        for name, weight in v.items():
            if is_pattern(name):
                validate_pattern(name)
            else:
                validate_queue_name(name)
            if not isinstance(weight, int) or weight < 1:
                raise ValueError(f"queue {name!r}: weight must be a positive integer, got {weight!r}")
        return v

    @field_validator("limits")
    @classmethod
    def _check_limits(cls, v: list[FlowLimit]) -> list[FlowLimit]:
        seen: set[tuple[str, str, str | None, str | None]] = set()
        for lim in v:
            what = (lim.kind, lim.queue, lim.task_type, lim.key)
            if what in seen:
                raise ValueError(
                    f"two {type(lim).__name__}s for queue {lim.queue!r}, task type {lim.task_type!r} and "
                    f"key {lim.key!r}: they would share one state; give one"
                )
            seen.add(what)
        return v

    @model_validator(mode="after")
    def _check_shards(self) -> Config:
        for name, count in self.shards.items():
            if name not in self.queues:
                raise ValueError(
                    f"shards[{name!r}]: not a key of queues (a sharded queue is served under its own "
                    f"entry: add queues={{{name!r}: <weight>}})"
                )
            if is_pattern(name):
                raise ValueError(f"shards[{name!r}]: a pattern cannot be sharded; give a literal queue name")
            shard_names(name, count)  # the name and count, checked (InvalidQueueName / ValueError)
        return self

    @model_validator(mode="after")
    def _check_timings(self) -> Config:
        if self.heartbeat_interval >= self.lease_duration:
            raise ValueError("heartbeat_interval must be shorter than lease_duration")
        return self

    def with_(self, **changes: Any) -> Config:
        """A copy with ``changes`` applied. It is pydantic's ``model_copy``, which does not validate: a bad
        value passes here unchecked (build a new ``Config(...)`` to have it checked)."""
        return self.model_copy(update=changes)
